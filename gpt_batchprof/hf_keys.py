"""Which keys of a Hugging Face ``config.json`` are refused.

A config.json carries many keys this tool has no use for (``torch_dtype``, ``architectures``,
``rms_norm_eps``, ``rope_theta``, ...): they are metadata or change no FLOP or byte we count,
so they are accepted. Two kinds are refused, with one line naming the key:

* a close misspelling of a key the mapping reads for this ``model_type``
  (``num_key_value_head`` for ``num_key_value_heads``): the value would be silently ignored
  and the default used instead (e.g. 32/32 heads instead of 32/8);
* keys that change the architecture in a way the operator list cannot express
  (:data:`UNMODELLED`): multi-head latent attention, mixed dense / MoE layer stacks, experts
  on a model_type mapped as dense. Keys the loader reads itself are never refused here.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Mapping

from gpt_batchprof.errors import ProfileError

# A key counts as a misspelling of a read key when difflib's ratio is at least this
# (num_key_value_head vs num_key_value_heads: 0.97; hidden_act vs hidden_size: 0.67).
MISSPELLING_CUTOFF = 0.85

_DENSE_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gpt2", "opt", "gpt_neox")


def _several(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 1


# key -> (is this value a change we cannot model?, why)
UNMODELLED: dict[str, tuple[Callable[[str, Any], bool], str]] = {
    "kv_lora_rank": (lambda mt, v: v is not None, "multi-head latent attention (compressed KV) is not modelled"),
    "q_lora_rank": (lambda mt, v: v is not None, "multi-head latent attention (low-rank Q) is not modelled"),
    "num_local_experts": (lambda mt, v: mt in _DENSE_TYPES and _several(v),
                          "experts on a model_type mapped as dense are not modelled"),
    "num_experts": (lambda mt, v: mt in _DENSE_TYPES and _several(v),
                    "experts on a model_type mapped as dense are not modelled"),
    "mlp_only_layers": (lambda mt, v: bool(v), "a mix of dense and MoE layers is not modelled"),
    "decoder_sparse_step": (lambda mt, v: v not in (None, 1), "MoE on only every n-th layer is not modelled"),
    "first_k_dense_replace": (lambda mt, v: bool(v), "a mix of dense and MoE layers is not modelled"),
    "moe_layer_freq": (lambda mt, v: v not in (None, 1), "MoE on only every n-th layer is not modelled"),
}


def check_hf_keys(cfg: Mapping[str, Any], read: set[str], where: str) -> None:
    """Refuse misspelt and unmodelled keys of ``cfg``; ``read``: the keys the mapping asked for."""
    mt = str(cfg.get("model_type"))
    for key in cfg:
        if key in read:
            continue
        rule = UNMODELLED.get(key)
        if rule is not None and rule[0](mt, cfg[key]):
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
    check_hf_keys(cfg, view.asked, where)


def checked(loader: Callable) -> Callable:
    """Decorator for ``model_from_hf_config(cfg, where, name)``: records the keys it reads, then
    runs :func:`check_hf_keys`."""
    from gpt_batchprof.files import reading_keys

    return reading_keys(_check)(loader)
