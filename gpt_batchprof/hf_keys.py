"""Which keys of a Hugging Face ``config.json`` are refused.

A config.json carries many keys this tool has no use for (``torch_dtype``, ``architectures``,
``rms_norm_eps``, ``rope_theta``, ...): they are metadata or change no FLOP or byte we count,
so they are accepted. Two kinds are refused, with one line naming the key:

* a close misspelling of a key the mapping reads for this ``model_type``
  (``num_key_value_head`` for ``num_key_value_heads``): the value would be silently ignored
  and the default used instead (e.g. 32/32 heads instead of 32/8);
* keys that change FLOPs, bytes or memory in a way the mapping of this ``model_type`` does not
  read (:data:`UNMODELLED`, the one list): multi-head latent attention, layer patterns (dense /
  MoE, sliding / full, chunked), expert keys of other families, biases, soft-capping. Keys the
  loader reads itself are never refused here.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Mapping

from gpt_batchprof.errors import ProfileError

# A key counts as a misspelling of a read key when difflib's ratio is at least this
# (num_key_value_head vs num_key_value_heads: 0.97; hidden_act vs hidden_size: 0.67).
MISSPELLING_CUTOFF = 0.85

_DENSE_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2", "opt", "gpt_neox")


def _several(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 1


def _set(mt: str, v: Any) -> bool:
    return v is not None and v is not False and v != [] and v != 0


def _not_all_full(mt: str, v: Any) -> bool:
    return isinstance(v, list) and any(t != "full_attention" for t in v)


_MLA = "multi-head latent attention (compressed KV) is not modelled"
_STACK = "this layer pattern is not read for this model_type"
# The one list of architecture keys a config.json may carry that change FLOPs, bytes or memory but
# that the mapping of its model_type does not read: key -> (is this value a change?, why refused).
# Keys the mapping reads are never refused (e.g. qwen3_moe reads mlp_only_layers, gpt_oss layer_types).
UNMODELLED: dict[str, tuple[Callable[[str, Any], bool], str]] = {
    # multi-head latent attention (DeepSeek-V2/V3, Kimi-K2)
    "kv_lora_rank": (_set, _MLA),
    "q_lora_rank": (_set, "multi-head latent attention (low-rank Q) is not modelled"),
    "qk_rope_head_dim": (_set, _MLA),
    "qk_nope_head_dim": (_set, _MLA),
    "v_head_dim": (_set, _MLA),
    # experts on a model_type mapped as dense, or expert keys the mapping does not read
    "num_local_experts": (lambda mt, v: mt in _DENSE_TYPES and _several(v),
                          "experts on a model_type mapped as dense are not modelled"),
    "num_experts": (lambda mt, v: mt in _DENSE_TYPES and _several(v),
                    "experts on a model_type mapped as dense are not modelled"),
    "n_routed_experts": (_set, "routed experts under this key are not read for this model_type"),
    "n_shared_experts": (_set, "shared experts under this key are not read for this model_type"),
    "num_shared_experts": (_set, "shared experts under this key are not read for this model_type"),
    "moe_intermediate_size": (_set, "an expert width under this key is not read for this model_type"),
    "shared_expert_intermediate_size": (_set, "a shared expert is not read for this model_type"),
    "intermediate_size_mlp": (_set, "a second FFN width (dense layers of an MoE stack) is not read for this model_type"),
    # which layers are dense, MoE, windowed or chunked
    "mlp_only_layers": (lambda mt, v: bool(v), _STACK + " (dense layers in an MoE stack)"),
    "decoder_sparse_step": (lambda mt, v: v not in (None, 1), _STACK + " (MoE on every n-th layer)"),
    "first_k_dense_replace": (lambda mt, v: bool(v), _STACK + " (dense layers before MoE ones)"),
    "moe_layer_freq": (lambda mt, v: v not in (None, 1), _STACK + " (MoE on every n-th layer)"),
    "interleave_moe_layer_step": (lambda mt, v: v not in (None, 1), _STACK + " (MoE on every n-th layer)"),
    "layer_types": (_not_all_full, _STACK + " (sliding or other attention on some layers)"),
    "sliding_window_pattern": (_set, _STACK + " (local / global attention alternation)"),
    "attention_chunk_size": (_set, "chunked attention is not read for this model_type"),
    "moe_layers": (lambda mt, v: v is not None, _STACK + " (MoE on the listed layers)"),
    # a window the mapping would drop (llama has none: a Gemma-2 config labelled llama)
    "sliding_window": (lambda mt, v: mt in ("llama", "gpt2", "opt", "gpt_neox") and _set(mt, v),
                       "a sliding window is not read for this model_type (it would be dropped)"),
    # biases on layers the mapping counts without them
    # (gpt_neox and qwen2 are mapped with their biases; the llama family reads both keys itself)
    "attention_bias": (lambda mt, v: v is True and mt not in ("gpt_neox", "qwen2", "qwen2_moe"),
                       "biases on the attention projections are not read for this model_type"),
    "mlp_bias": (lambda mt, v: v is True, "biases on the FFN projections are not read for this model_type"),
    # logit soft-capping changes the attention kernel (no fused flash kernel without it)
    "attn_logit_softcapping": (_set, "attention logit soft-capping is not modelled"),
    "final_logit_softcapping": (_set, "final logit soft-capping is not modelled"),
}


def check_hf_keys(cfg: Mapping[str, Any], read: set[str], where: str, complete: bool = True) -> None:
    """Refuse misspelt and unmodelled keys of ``cfg``; ``read``: the keys the mapping asked for.
    ``complete``: the mapping ran to its end (when it stopped early on a bad value, a key it had not
    reached yet is not "unmodelled": only misspellings are named, then the mapping's own error)."""
    mt = str(cfg.get("model_type"))
    for key in cfg:
        if key in read:
            continue
        rule = UNMODELLED.get(key)
        if complete and rule is not None and rule[0](mt, cfg[key]):
            raise ProfileError(f"{where}: field '{key}': {rule[1]} (model_type {mt})")
        # same number of '_'-parts: a typo inside a word (num_key_value_head), not another
        # real key built on ours (use_sliding_window next to sliding_window)
        parts = key.count("_")
        near = difflib.get_close_matches(key, sorted(k for k in read if k.count("_") == parts), n=1,
                                         cutoff=MISSPELLING_CUTOFF)
        if near:
            raise ProfileError(f"{where}: unknown field '{key}'; did you mean '{near[0]}'?")


def _check(cfg: Mapping[str, Any], view: Any, where: str, failed: bool) -> None:
    # also when the loader failed: a misspelt required key is better named as a misspelling
    check_hf_keys(cfg, view.asked, where, complete=not failed)


def checked(loader: Callable) -> Callable:
    """Decorator for ``model_from_hf_config(cfg, where, name)``: records the keys it reads, then
    runs :func:`check_hf_keys`."""
    from gpt_batchprof.files import reading_keys

    return reading_keys(_check)(loader)
