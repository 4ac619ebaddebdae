"""`--engine hf`: the generation loop on the Hugging Face transformers model of the same config.

The model is built offline from a config (``AutoModelForCausalLM.from_config``: random
weights, nothing downloaded): the user's own ``config.json`` when ``--model`` is one, else
a config of the matching transformers architecture written from the ModelSpec (GPT-2 for
learned positions + LayerNorm + GELU, GPT-NeoX for rotary + LayerNorm + GELU, Llama for
rotary + RMSNorm + SwiGLU, Mistral when it has a sliding window, Mixtral for its MoE form,
Qwen2-MoE when the experts have a shared one).

Cache: transformers' ``DynamicCache``, what ``model.generate()`` uses by default, so the
figures are what a plain transformers deployment reaches. It grows by concatenation
(every decode step copies each layer's K and V once more), and its attention spans
exactly the cached tokens, like analyze's. (A ``StaticCache`` would preallocate like the
reference model but attend over the whole preallocated length with a mask, so its
attention work would not follow the cache length.) Runs eagerly: CUDA graphs for
transformers need its static cache and ``torch.compile``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import ModelSpec

HF_HINT = "--engine hf needs Hugging Face transformers: pip install 'gpt-batchprof[hf]'"


def require_transformers():
    try:
        import transformers
    except ModuleNotFoundError:
        raise BatchprofError(HF_HINT) from None
    return transformers


def _refuse_missing(spec: ModelSpec, arch: str, *, gqa: bool, experts: bool, window: bool,
                    free_head_dim: bool) -> None:
    """One line when transformers' ``arch`` cannot hold what ``spec`` asks for: building it anyway
    would time a different model (MHA for MQA, a dense FFN for experts, full attention for a window)."""
    lacks = []
    if not gqa and spec.n_kv_head != spec.n_head:
        lacks.append(f"{'MQA' if spec.n_kv_head == 1 else 'GQA'} ({spec.n_kv_head} K/V heads for {spec.n_head} "
                     "query heads)")
    if not experts and spec.is_moe:
        lacks.append(f"experts ({spec.n_expert})")
    if not window and spec.sliding_window:
        lacks.append(f"sliding window ({spec.sliding_window})")
    if not free_head_dim and spec.head_dim * spec.n_head != spec.d_model:
        lacks.append(f"head_dim {spec.head_dim} (d_model / n_head is {spec.d_model // spec.n_head})")
    if lacks:
        raise BatchprofError(
            f"--engine hf: {spec.name} would be built as transformers' {arch}, which has no {' and no '.join(lacks)}; "
            "give its config.json as --model, or use --engine reference")


def check_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """Refuse, before any weight is built, the config values transformers only rejects deep inside
    model construction (a KeyError traceback): an activation or a RoPE scaling it does not have."""
    from transformers.activations import ACT2FN
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for key in ("hidden_act", "activation_function", "hidden_activation"):
        act = cfg.get(key)
        if isinstance(act, str) and act not in ACT2FN:
            raise BatchprofError(f"--engine hf: {where}: {key} '{act}' is not an activation transformers has "
                                 f"(it has {', '.join(sorted(ACT2FN))})")
    for key in ("rope_scaling", "rope_parameters"):
        rope = cfg.get(key)
        if isinstance(rope, dict):
            kind = rope.get("rope_type", rope.get("type", "default"))
            known = ("default",) + tuple(ROPE_INIT_FUNCTIONS)
            if kind not in known:
                raise BatchprofError(f"--engine hf: {where}: {key} type '{kind}' is not a RoPE scaling transformers "
                                     f"has (it has {', '.join(known)})")
    return cfg


def config_dict(spec: ModelSpec) -> dict[str, Any]:
    """The config.json behind ``spec`` when it was loaded from one, else one written from the spec
    (refused when no transformers architecture can be built exactly as the spec says)."""
    if spec.source.endswith(".json"):
        import json

        with open(spec.source, encoding="utf-8") as fh:
            return json.load(fh)
    if spec.layer_groups or spec.attention_sinks or spec.router_bias or spec.is_mla or spec.norms_per_layer != 2:
        raise BatchprofError(f"--engine hf: {spec.name} has layer kinds or parts (sinks, router bias) a config "
                             "written from the profile cannot express; give its config.json as --model")
    common = {"vocab_size": spec.vocab_size, "tie_word_embeddings": spec.tied_embeddings}
    if spec.positional == "learned" and spec.norm == "layernorm" and spec.ffn == "gelu":
        _refuse_missing(spec, "gpt2", gqa=False, experts=False, window=False, free_head_dim=False)
        return common | {"model_type": "gpt2", "n_positions": spec.max_seq_len, "n_embd": spec.d_model,
                         "n_layer": spec.n_layer, "n_head": spec.n_head, "n_inner": spec.d_ff,
                         "activation_function": "gelu_new"}
    if spec.positional == "rope" and spec.norm == "layernorm" and spec.ffn == "gelu" and not spec.is_moe:
        _refuse_missing(spec, "gpt_neox", gqa=False, experts=False, window=False, free_head_dim=False)
        return common | {"model_type": "gpt_neox", "hidden_size": spec.d_model, "num_hidden_layers": spec.n_layer,
                         "num_attention_heads": spec.n_head, "intermediate_size": spec.d_ff,
                         "max_position_embeddings": spec.max_seq_len, "rotary_pct": 1.0, "hidden_act": "gelu"}
    if spec.positional == "rope" and spec.norm == "rmsnorm" and spec.ffn == "swiglu":
        d = common | {"hidden_size": spec.d_model, "num_hidden_layers": spec.n_layer,
                      "num_attention_heads": spec.n_head, "num_key_value_heads": spec.n_kv_head,
                      "head_dim": spec.head_dim, "intermediate_size": spec.d_ff,
                      "max_position_embeddings": spec.max_seq_len, "attention_bias": spec.bias}
        if spec.d_ff_shared:
            _refuse_missing(spec, "qwen2_moe", gqa=True, experts=True, window=False, free_head_dim=True)
            return d | {"model_type": "qwen2_moe", "num_experts": spec.n_expert, "moe_intermediate_size": spec.d_ff,
                        "shared_expert_intermediate_size": spec.d_ff_shared,
                        "num_experts_per_tok": spec.n_expert_active}
        if spec.is_moe:
            return d | {"model_type": "mixtral", "num_local_experts": spec.n_expert,
                        "num_experts_per_tok": spec.n_expert_active, "sliding_window": spec.sliding_window}
        if spec.sliding_window:
            return d | {"model_type": "mistral", "sliding_window": spec.sliding_window}
        return d | {"model_type": "llama"}
    raise BatchprofError(
        f"--engine hf: no transformers architecture matches {spec.name} ({spec.positional} positions, "
        f"{spec.norm}, {spec.ffn}); give its config.json as --model, or use --engine reference")


class HFEngine:
    name = "hf"
    graphable = False

    def __init__(self, spec: ModelSpec, scenario, settings, cfg: dict[str, Any] | None = None):
        from gpt_batchprof.measure.generate import torch_dtype_of

        transformers = require_transformers()
        cfg = {k: v for k, v in check_config(cfg or config_dict(spec), spec.source or spec.name).items()
               if not k.startswith("_")}  # "_comment"
        model_type = cfg.pop("model_type", None)
        try:
            config = transformers.AutoConfig.for_model(model_type, **cfg)
        except (ValueError, KeyError) as e:
            raise BatchprofError(f"--engine hf: transformers cannot build a '{model_type}' config ({e})") from None
        attn = "sdpa" if scenario.attention == "fused" else "eager"
        self.model = transformers.AutoModelForCausalLM.from_config(
            config, dtype=torch_dtype_of(scenario), attn_implementation=attn).to(settings.device).eval()
        self.vocab_size = config.vocab_size

    def session(self, batch: int, max_len: int) -> "HFSession":
        return HFSession(self.model)


@dataclass
class HFSession:
    model: Any
    cache: Any = None

    def prefill(self, prompt):
        from transformers import DynamicCache

        self.cache = DynamicCache()  # every generation starts empty
        out = self.model(input_ids=prompt, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)

    def decode(self, tok, pos: int):
        out = self.model(input_ids=tok, past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)

    @property
    def cache_len(self) -> int:
        return int(self.cache.get_seq_length())
