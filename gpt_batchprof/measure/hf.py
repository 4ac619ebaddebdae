"""`--engine hf`: the generation loop on the Hugging Face transformers model of the same config.

The model is built offline from a config (``AutoModelForCausalLM.from_config``: random
weights, nothing downloaded): the user's own ``config.json`` when ``--model`` is one, else
a config of the matching transformers architecture written from the ModelSpec (GPT-2 for
learned positions + LayerNorm + GELU, GPT-NeoX for rotary + LayerNorm + GELU, Llama for
rotary + RMSNorm + SwiGLU, Mistral when it has a sliding window, Mixtral for its MoE form,
Qwen2 / Qwen2-MoE for q/k/v biases or a shared expert, Qwen3 / Qwen3-MoE for q/k norms,
Gemma 3, gpt-oss, DeepSeek-V3 and Llama 4 (chunked attention, an ungated shared expert) for their layer
stacks). A multimodal config's vision tower is not built (the language model is timed). Either way the built model must hold
exactly the profile's weights, or the run is refused: it would time another model.

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
        lacks.append(f"head_dim {spec.head_dim} apart from d_model / n_head ({spec.d_model} / {spec.n_head})")
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


# config.json model_types transformers builds under another name: the multimodal wrappers keep their
# language model in text_config (its own model_type), Kimi-K2 is DeepSeek-V3's architecture (its
# config.json names DeepseekV3ForCausalLM and ships no modelling code of its own).
TEXT_MODEL_TYPES = {"gemma3": "gemma3_text", "llama4": "llama4_text"}
SAME_ARCHITECTURE = {"kimi_k2": "deepseek_v3"}


def language_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a config.json transformers builds a causal LM from, with a model_type it knows."""
    mt = cfg.get("model_type")
    if mt in TEXT_MODEL_TYPES and isinstance(cfg.get("text_config"), dict):
        cfg = dict(cfg["text_config"]) | {"model_type": TEXT_MODEL_TYPES[mt]}
        mt = cfg["model_type"]
    if mt == "llama4_text" and isinstance(cfg.get("attn_temperature_tuning"), int):
        # Meta's published configs say 4 (a truthy int transformers 4.5x took); 5.x's strict config wants a bool
        return dict(cfg) | {"attn_temperature_tuning": bool(cfg["attn_temperature_tuning"])}
    if mt in SAME_ARCHITECTURE:
        return dict(cfg) | {"model_type": SAME_ARCHITECTURE[mt]}
    return dict(cfg)


def _layer_types(spec: ModelSpec) -> list[str]:
    """transformers' per-layer attention list, in the order the stack runs its layers."""
    return ["full_attention" if p.sliding_window is None else "sliding_attention" for p in spec.layer_specs()]


def _one_window(spec: ModelSpec) -> int | None:
    windows = {p.sliding_window for p in spec.parts()} - {None}
    if len(windows) > 1:
        raise BatchprofError(f"--engine hf: {spec.name} has windows of {sorted(windows)} tokens; transformers' "
                             "configs hold one; give its config.json as --model, or use --engine reference")
    return next(iter(windows), None)


def _ffn_groups(spec: ModelSpec) -> tuple[list[int], int | None]:
    """Indices of the dense layers of an MoE stack, and their width (None when there are none)."""
    dense = [i for i, p in enumerate(spec.layer_specs()) if p.n_expert == 1]
    widths = {spec.layer_specs()[i].d_ff for i in dense}
    moe = {(p.d_ff, p.n_expert, p.n_expert_active, p.d_ff_shared) for p in spec.parts() if p.n_expert > 1}
    if len(widths) > 1 or len(moe) > 1:
        raise BatchprofError(f"--engine hf: {spec.name} has several dense or MoE layer kinds; transformers' configs "
                             "hold one of each; give its config.json as --model, or use --engine reference")
    return dense, next(iter(widths), None)


def _moe_fields(spec: ModelSpec) -> ModelSpec:
    """The MoE layers' part of a stack (the model itself when uniform)."""
    return next((p for p in spec.parts() if p.n_expert > 1), spec)


def _llama4_from_spec(spec: ModelSpec, chunks: set[int]) -> dict[str, Any]:
    """Llama 4's text model (Llama4ForCausalLM): chunked and full-attention layers listed in ``layer_types``
    (chunked layers are its RoPE layers, ``no_rope_layers`` 1), MoE layers in ``moe_layers`` with one
    ungated shared expert as wide as a routed one, dense layers of ``intermediate_size_mlp``. The weightless
    q/k L2 norm (``use_qk_norm``) changes no count; left off."""
    if len(chunks) > 1:
        raise BatchprofError(f"--engine hf: {spec.name} has chunks of {sorted(chunks)} tokens; transformers' "
                             "Llama 4 config holds one; use --engine reference")
    if _one_window(spec):
        raise BatchprofError(f"--engine hf: {spec.name} has a sliding window; transformers' Llama 4 has none "
                             "(its local attention is chunked); use --engine reference")
    dense, dense_ff = _ffn_groups(spec)
    moe = _moe_fields(spec)
    if spec.is_moe and moe.d_ff_shared != moe.d_ff:
        raise BatchprofError(f"--engine hf: {spec.name}'s shared expert ({moe.d_ff_shared}) is not one expert of "
                             f"{moe.d_ff}, as transformers' Llama 4 builds it; use --engine reference")
    layers = spec.layer_specs()
    chunked = [p.attention_chunk is not None for p in layers]
    return {"model_type": "llama4_text", "intermediate_size": moe.d_ff, "intermediate_size_mlp": dense_ff or moe.d_ff,
            "num_local_experts": moe.n_expert, "num_experts_per_tok": moe.n_expert_active,
            "moe_layers": [i for i, p in enumerate(layers) if p.n_expert > 1],
            "attention_chunk_size": next(iter(chunks), None),
            "layer_types": ["chunked_attention" if c else "full_attention" for c in chunked],
            "no_rope_layers": [int(c) for c in chunked], "use_qk_norm": False}


def _from_spec(spec: ModelSpec) -> dict[str, Any]:
    """A config.json for the transformers architecture that builds exactly what ``spec`` describes."""
    common = {"vocab_size": spec.vocab_size, "tie_word_embeddings": spec.tied_embeddings}
    rope_decoder = spec.positional == "rope" and spec.norm == "rmsnorm"
    d = common | {"hidden_size": spec.d_model, "num_hidden_layers": spec.n_layer,
                  "num_attention_heads": spec.n_head, "num_key_value_heads": spec.n_kv_head,
                  "head_dim": spec.head_dim, "intermediate_size": spec.d_ff,
                  "max_position_embeddings": spec.max_seq_len, "attention_bias": spec.bias}
    if spec.is_mla and rope_decoder and spec.ffn == "swiglu":  # DeepSeek-V3 / Kimi-K2
        dense, dense_ff = _ffn_groups(spec)  # built first, as DeepSeek-V3 places them (the order costs nothing)
        moe = _moe_fields(spec)
        if moe.d_ff_shared % moe.d_ff:
            raise BatchprofError(f"--engine hf: {spec.name}'s shared expert ({moe.d_ff_shared}) is not a whole "
                                 f"number of experts of {moe.d_ff}; DeepSeek-V3's config counts them")
        return d | {"model_type": "deepseek_v3", "intermediate_size": dense_ff or spec.d_ff,
                    "moe_intermediate_size": moe.d_ff, "n_routed_experts": moe.n_expert,
                    "num_experts_per_tok": moe.n_expert_active, "n_shared_experts": moe.d_ff_shared // moe.d_ff,
                    "first_k_dense_replace": len(dense), "n_group": 1, "topk_group": 1,
                    "q_lora_rank": spec.q_lora_rank or None, "kv_lora_rank": spec.kv_lora_rank,
                    "qk_rope_head_dim": spec.qk_rope_head_dim, "qk_nope_head_dim": spec.head_dim,
                    "v_head_dim": spec.v_head_dim, "head_dim": spec.qk_rope_head_dim}
    if spec.attention_sinks and rope_decoder and spec.ffn == "swiglu":  # gpt-oss
        return d | {"model_type": "gpt_oss", "num_local_experts": spec.n_expert,
                    "num_experts_per_tok": spec.n_expert_active, "sliding_window": _one_window(spec) or 0,
                    "layer_types": _layer_types(spec)}
    if spec.norms_per_layer == 4 and rope_decoder and spec.ffn == "geglu" and not spec.is_moe:  # Gemma 3
        return d | {"model_type": "gemma3_text", "sliding_window": _one_window(spec) or spec.max_seq_len,
                    "layer_types": _layer_types(spec), "hidden_activation": "gelu_pytorch_tanh"}
    moe = _moe_fields(spec)
    chunks = {p.attention_chunk for p in spec.parts()} - {None}
    if rope_decoder and spec.ffn == "swiglu" and (chunks or (moe.d_ff_shared and not spec.shared_expert_gate)) \
            and not (spec.attention_sinks or spec.router_bias or spec.is_mla or spec.qk_norm or spec.bias
                     or spec.qkv_bias):
        return d | _llama4_from_spec(spec, chunks)
    if spec.qk_norm and rope_decoder and spec.ffn == "swiglu" and not spec.d_ff_shared:  # Qwen3, Qwen3-MoE
        _refuse_missing(spec, "qwen3", gqa=True, experts=True, window=False, free_head_dim=True)
        if not spec.is_moe:
            return d | {"model_type": "qwen3"}
        dense, dense_ff = _ffn_groups(spec)
        moe = _moe_fields(spec)
        return d | {"model_type": "qwen3_moe", "intermediate_size": dense_ff or spec.d_ff, "num_experts": moe.n_expert,
                    "moe_intermediate_size": moe.d_ff, "num_experts_per_tok": moe.n_expert_active,
                    "mlp_only_layers": dense, "decoder_sparse_step": 1}
    if spec.is_stack and spec.d_ff_shared and rope_decoder and spec.ffn == "swiglu" and spec.shared_expert_gate \
            and not (spec.attention_sinks or spec.router_bias or spec.is_mla or spec.qk_norm or _one_window(spec)):
        dense, dense_ff = _ffn_groups(spec)  # Qwen2-MoE: dense layers listed in mlp_only_layers
        moe = _moe_fields(spec)
        return d | {"model_type": "qwen2_moe", "qkv_bias": spec.qkv_bias, "intermediate_size": dense_ff or spec.d_ff,
                    "num_experts": moe.n_expert,
                    "moe_intermediate_size": moe.d_ff, "shared_expert_intermediate_size": moe.d_ff_shared,
                    "num_experts_per_tok": moe.n_expert_active, "mlp_only_layers": dense, "decoder_sparse_step": 1}
    if spec.layer_groups or spec.attention_sinks or spec.router_bias or spec.is_mla or spec.norms_per_layer != 2 \
            or spec.qk_norm:
        raise BatchprofError(f"--engine hf: {spec.name} has layer kinds or parts (sinks, router bias, q/k norms) no "
                             "transformers architecture written from the profile holds together; give its "
                             "config.json as --model, or use --engine reference")
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
    if rope_decoder and spec.ffn == "swiglu":
        if spec.d_ff_shared:
            _refuse_missing(spec, "qwen2_moe", gqa=True, experts=True, window=False, free_head_dim=True)
            return d | {"model_type": "qwen2_moe", "qkv_bias": spec.qkv_bias, "num_experts": spec.n_expert,
                        "moe_intermediate_size": spec.d_ff,
                        "shared_expert_intermediate_size": spec.d_ff_shared,
                        "num_experts_per_tok": spec.n_expert_active}
        if spec.is_moe:
            return d | {"model_type": "mixtral", "num_local_experts": spec.n_expert,
                        "num_experts_per_tok": spec.n_expert_active, "sliding_window": spec.sliding_window}
        if spec.qkv_bias and not spec.bias:  # Qwen2: biases on q, k and v only
            _refuse_missing(spec, "qwen2", gqa=True, experts=False, window=False, free_head_dim=True)
            return d | {"model_type": "qwen2"}
        if spec.sliding_window:
            return d | {"model_type": "mistral", "sliding_window": spec.sliding_window}
        return d | {"model_type": "llama"}
    raise BatchprofError(
        f"--engine hf: no transformers architecture matches {spec.name} ({spec.positional} positions, "
        f"{spec.norm}, {spec.ffn}); give its config.json as --model, or use --engine reference")


def config_dict(spec: ModelSpec) -> dict[str, Any]:
    """The config.json behind ``spec`` when it was loaded from one (its language model, under a
    model_type transformers builds), else one written from the spec (refused when no transformers
    architecture can be built exactly as the spec says)."""
    if spec.source.endswith(".json"):
        import json

        with open(spec.source, encoding="utf-8") as fh:
            return language_config(json.load(fh))
    return _from_spec(spec)


def stored_numel(model) -> int:
    """Values the model stores: its parameters and persistent buffers (DeepSeek-V3's per-expert
    score correction is a buffer), each shared tensor (tied embeddings) once."""
    seen: dict[int, int] = {}
    for t in model.state_dict(keep_vars=True).values():
        seen[id(t)] = t.numel()
    return sum(seen.values())


class HFEngine:
    name = "hf"
    graphable = False

    def __init__(self, spec: ModelSpec, scenario, settings, cfg: dict[str, Any] | None = None):
        from gpt_batchprof.measure.kernels import torch_dtype_of

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
        # the language model only: a multimodal checkpoint's vision tower (vision_params) is not built
        built, want = stored_numel(self.model), spec.n_params - spec.vision_params
        if built != want:  # a key the config carries that the profile's mapping did not read, or the reverse
            raise BatchprofError(f"--engine hf: transformers' {type(self.model).__name__} built from "
                                 f"{spec.source or spec.name} holds {built:,} weights, the profile {want:,}; "
                                 "it would time another model (use --engine reference)")

    def session(self, batch: int, max_len: int) -> "HFSession":
        return HFSession(self.model, cache_argument(self.model))


def cache_argument(model) -> str:
    """The keyword the model's forward takes its KV cache by: ``cache`` from transformers 5.2x
    (``past_key_values`` is deprecated there, to be removed in 5.40), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class HFSession:
    model: Any
    cache_kw: str = "past_key_values"
    cache: Any = None

    def prefill(self, prompt):
        from transformers import DynamicCache

        self.cache = DynamicCache()  # every generation starts empty
        out = self.model(input_ids=prompt, use_cache=True, logits_to_keep=1, **{self.cache_kw: self.cache})
        return out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)

    def decode(self, tok, pos: int):
        out = self.model(input_ids=tok, use_cache=True, **{self.cache_kw: self.cache})
        return out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)

    @property
    def cache_len(self) -> int:
        return int(self.cache.get_seq_length())
