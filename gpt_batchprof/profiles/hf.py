"""Hugging Face ``config.json`` (read offline) mapped to the profile schema, family by family.
Keys that change FLOPs, bytes or memory and are not modelled are refused (``hf_keys``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

from gpt_batchprof import hf_keys
from gpt_batchprof.errors import ProfileError
from gpt_batchprof.profiles.schema import model_from_mapping
from gpt_batchprof.profiles.specs import ModelSpec


def _hf_get(cfg: Mapping[str, Any], where: str, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    if default is not None:
        return default
    raise ProfileError(f"{where}: field '{keys[0]}': missing (required for this model_type)")


def _projection_biases(cfg: Mapping[str, Any], where: str, mt: str) -> bool:
    """llama-style ``attention_bias`` and ``mlp_bias``: both true is a model with a bias on every
    projection (the schema's ``bias``); one without the other is refused (one flag cannot say it)."""
    attn, mlp = cfg.get("attention_bias") is True, cfg.get("mlp_bias") is True
    if attn != mlp:
        key = "attention_bias" if attn else "mlp_bias"
        raise ProfileError(f"{where}: field '{key}': biases on only the "
                           f"{'attention' if attn else 'FFN'} projections are not modelled (model_type {mt})")
    return attn


def _qwen_moe_layers(cfg: Mapping[str, Any], g: Callable, n_layer: int) -> dict[str, Any]:
    """qwen2_moe / qwen3_moe: layer i is MoE unless it is in ``mlp_only_layers`` or (i + 1) is not a
    multiple of ``decoder_sparse_step`` (as transformers builds them); the others are dense FFNs of
    ``intermediate_size``."""
    step = cfg.get("decoder_sparse_step") or 1
    dense_only = set(cfg.get("mlp_only_layers") or ())
    moe = {
        "n_expert": g("num_experts"),
        "n_expert_active": g("num_experts_per_tok"),
        "d_ff": g("moe_intermediate_size"),
        "d_ff_shared": cfg.get("shared_expert_intermediate_size") or 0,
    }
    dense = [i in dense_only or bool((i + 1) % step) for i in range(n_layer)]
    if any(dense):
        moe["layers"] = [{"count": n_layer - sum(dense)},
                         {"count": sum(dense), "n_expert": 1, "d_ff": g("intermediate_size")}]
        moe["layer_order"] = [int(x) for x in dense]  # layers[0] MoE, layers[1] dense
    return moe


def _ordered(layers: list[dict[str, Any]], kinds: list[int]) -> dict[str, Any]:
    """``layers`` (groups of the kinds 0, 1, ... with an empty one dropped) and ``layer_order``: per
    layer, in the order transformers builds them, the index of its group in that list."""
    kept = [i for i, grp in enumerate(layers) if grp["count"]]
    return {"layers": [layers[i] for i in kept], "layer_order": [kept.index(k) for k in kinds]}


def _attention_layers(cfg: Mapping[str, Any], where: str, n_layer: int, window: int) -> dict[str, Any]:
    """``layer_types`` ("sliding_attention" / "full_attention" per layer) as layer groups, in order."""
    types = cfg.get("layer_types")
    if not isinstance(types, list) or len(types) != n_layer:
        raise ProfileError(f"{where}: field 'layer_types': must list the attention of each of the "
                           f"{n_layer} layers, got {types!r:.60}")
    unknown = sorted({t for t in types if t not in ("sliding_attention", "full_attention")})
    if unknown:
        raise ProfileError(f"{where}: field 'layer_types': {unknown[0]!r} is not modelled "
                           "(known: sliding_attention, full_attention)")
    sliding = types.count("sliding_attention")
    groups = [{"count": sliding, "sliding_window": window}, {"count": n_layer - sliding, "sliding_window": None}]
    return _ordered(groups, [0 if t == "sliding_attention" else 1 for t in types])
def _windowed_layers(cfg: Mapping[str, Any], where: str, mt: str, n_layer: Any) -> int:
    """How many layers a config's sliding window applies to (a stack of windowed and full layers
    when not all or none).

    As transformers builds them: an explicit ``layer_types`` list says it per layer; mistral,
    mixtral and phi3 window every layer; qwen2/qwen3 only with ``use_sliding_window: true``, and then
    only the layers from ``max_window_layers`` on (default 28), so Qwen2-7B (28 layers) has none."""
    types = cfg.get("layer_types")
    if isinstance(types, list) and types:
        return sum(t == "sliding_attention" for t in types)
    if not isinstance(n_layer, int) or isinstance(n_layer, bool):
        return 0  # the field checks name the bad value
    if mt in ("mistral", "mixtral", "phi3"):
        return n_layer
    if not cfg.get("use_sliding_window"):
        return 0
    first = cfg.get("max_window_layers", 28)
    if not isinstance(first, int) or isinstance(first, bool):
        return n_layer  # the field checks name the bad value
    return min(n_layer, max(0, n_layer - max(0, first)))


def _int_key(cfg: Mapping[str, Any], where: str, key: str, default: int | None, minimum: int = 1) -> int | None:
    """An integer key (``default`` when absent; an explicit null stays None), refused in one line when not
    an integer >= ``minimum``."""
    v = cfg.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ProfileError(f"{where}: field '{key}': must be an integer >= {minimum}, got {v!r:.60}")
    return v


def _llama4_layer_pattern(cfg: Mapping[str, Any], where: str, n_layer: int, chunk: int | None) -> list[bool]:
    """Which layers attend in chunks, as Llama4TextConfig derives it: ``layer_types`` when given
    ("chunked_attention" / "full_attention"); else ``no_rope_layers`` (1: a RoPE layer, chunked; 0: a
    NoPE layer, full attention), which, absent or empty, is 1 but on every ``no_rope_layer_interval``-th
    layer (default 4: layers 3, 7, 11, ... attend to the whole context). No chunk size: all full."""
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != n_layer:
            raise ProfileError(f"{where}: field 'layer_types': must list the attention of each of the "
                               f"{n_layer} layers, got {types!r:.60}")
        unknown = sorted({str(t) for t in types if t not in ("chunked_attention", "full_attention")})
        if unknown:
            raise ProfileError(f"{where}: field 'layer_types': {unknown[0]!r} is not modelled for llama4 "
                               "(known: chunked_attention, full_attention)")
        if chunk is None and "chunked_attention" in types:
            raise ProfileError(f"{where}: field 'layer_types': chunked_attention without an attention_chunk_size")
        return [t == "chunked_attention" for t in types]
    rope = cfg.get("no_rope_layers")
    interval = _int_key(cfg, where, "no_rope_layer_interval", 4)
    if not rope:  # transformers: None or [] -> the default pattern
        rope = [int((i + 1) % interval != 0) for i in range(n_layer)]
    if not isinstance(rope, list) or len(rope) < n_layer or any(v not in (0, 1) or isinstance(v, float) for v in rope):
        raise ProfileError(f"{where}: field 'no_rope_layers': must list 1 (RoPE) or 0 (NoPE) for each of the "
                           f"{n_layer} layers, got {rope!r:.60}")
    return [bool(r) and chunk is not None for r in rope[:n_layer]]


def _llama4_text(cfg: Mapping[str, Any], g: Callable, where: str) -> dict[str, Any]:
    """Llama 4's language model (Llama4TextConfig, Llama4TextDecoderLayer): MoE layers of
    ``num_local_experts`` experts of ``intermediate_size``, ``num_experts_per_tok`` routed per token
    (a sigmoid router without bias), plus one always-on shared expert of ``intermediate_size`` without
    a gate; the other layers dense of ``intermediate_size_mlp``. MoE layers: ``moe_layers``, else every
    ``interleave_moe_layer_step``-th (layers step-1, 2 step-1, ...). Attention chunked
    (``attention_chunk_size``) on the RoPE layers, full on the NoPE ones (:func:`_llama4_layer_pattern`).
    ``use_qk_norm`` is a weightless L2 norm (no parameters; an elementwise pass fused like the rotary
    embedding); ``attn_temperature_tuning`` scales the NoPE layers' queries (elementwise): neither is priced."""
    g("num_hidden_layers"), g("num_attention_heads"), g("hidden_size")  # missing: named as such
    n_layer, n_head = _int_key(cfg, where, "num_hidden_layers", None), _int_key(cfg, where, "num_attention_heads", None)
    _int_key(cfg, where, "hidden_size", None)
    if cfg.get("attention_bias") is True:
        raise ProfileError(f"{where}: field 'attention_bias': biases on q, k, v and o only are not modelled "
                           "(model_type llama4_text)")
    chunk = _int_key(cfg, where, "attention_chunk_size", 8192)
    step = _int_key(cfg, where, "interleave_moe_layer_step", 1)
    moe_layers = cfg.get("moe_layers")
    if moe_layers is None:
        moe_layers = list(range(step - 1, n_layer, step))
    if not isinstance(moe_layers, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in moe_layers):
        raise ProfileError(f"{where}: field 'moe_layers': must be a list of layer indices, got {moe_layers!r:.60}")
    chunked = _llama4_layer_pattern(cfg, where, n_layer, chunk)
    n_expert, width = g("num_local_experts"), g("intermediate_size")
    out = _rope_decoder_fields(cfg, g) | {
        "head_dim": g("head_dim", default=g("hidden_size") // n_head),
        "bias": False,
        "n_expert": n_expert,
        "n_expert_active": g("num_experts_per_tok"),
        "d_ff_shared": width,  # Llama4TextMoe.shared_expert: one expert of the same width, always on
        "shared_expert_gate": False,
    }
    cfg.get("use_qk_norm")  # read: weightless, nothing to count
    moe = set(moe_layers)
    kinds: dict[tuple[bool, bool], int] = {}
    for i in range(n_layer):
        kinds[(chunked[i], i in moe)] = kinds.get((chunked[i], i in moe), 0) + 1
    if any(chunked):
        out["attention_chunk"] = chunk
    # read either way (Scout states it with no dense layer to use it)
    dense_width = g("intermediate_size_mlp") if any(not is_moe for _, is_moe in kinds) else cfg.get("intermediate_size_mlp")
    groups = []
    for (is_chunked, is_moe), count in kinds.items():
        grp: dict[str, Any] = {"count": count, "attention_chunk": chunk if is_chunked else None}
        if not is_moe:
            grp |= {"n_expert": 1, "d_ff": dense_width}
        groups.append(grp)
    if len(groups) > 1 or not any(is_moe for _, is_moe in kinds):
        out["layers"] = groups
    if len(groups) > 1:  # in the order transformers builds them (pipeline stages take whole layers in order)
        index = list(kinds)
        out["layer_order"] = [index.index((chunked[i], i in moe)) for i in range(n_layer)]
    return out


def llama4_vision_params(vision: Mapping[str, Any], d_model: int, where: str) -> int:
    """Weights of Llama 4's vision tower and its projector into the language model, as transformers builds
    them (Llama4VisionModel, Llama4MultiModalProjector), with Llama4VisionConfig's defaults: the unfolded
    patch embedding (channels x patch^2 -> h, no bias), class and position embeddings, two LayerNorms,
    ``num_hidden_layers`` encoder layers (q, k, v, o with biases, a GELU MLP h -> intermediate -> h with
    biases, two LayerNorms), the pixel-shuffle adapter (intermediate -> projector_input_dim and
    projector_output_dim squared, no biases) and the projector (vision_output_dim -> d_model, no bias)."""
    read = {"model_type", "multi_modal_projector_bias"}

    def n(key: str, default: int) -> int:
        read.add(key)
        v = vision.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ProfileError(f"{where}: field '{key}': must be an integer >= 1, got {v!r:.60}")
        return v

    h, inner, layers = n("hidden_size", 768), n("intermediate_size", 5632), n("num_hidden_layers", 34)
    patch, image, channels = n("patch_size", 14), n("image_size", 448), n("num_channels", 3)
    if vision.get("multi_modal_projector_bias"):
        raise ProfileError(f"{where}: field 'multi_modal_projector_bias': a biased projector is not modelled")
    layer = 4 * (h * h + h) + (h * inner + inner) + (inner * h + h) + 2 * 2 * h
    tower = channels * patch * patch * h + h + ((image // patch) ** 2 + 1) * h + 2 * 2 * h + layers * layer
    adapter = inner * n("projector_input_dim", 4096) + n("projector_output_dim", 4096) ** 2
    projector = n("vision_output_dim", 7680) * d_model
    hf_keys.check_hf_keys(vision, read, where)  # a misspelt size is named, not replaced by its default
    return tower + adapter + projector


def _rope_decoder_fields(cfg: Mapping[str, Any], g: Callable[..., Any]) -> dict[str, Any]:
    """The fields every rotary, RMSNorm, gated-FFN decoder's config.json states the same way
    (llama, mistral, qwen, phi3, gpt_oss): read in one place."""
    n_head = g("num_attention_heads")
    return {
        "n_layer": g("num_hidden_layers"),
        "d_model": g("hidden_size"),
        "n_head": n_head,
        "n_kv_head": g("num_key_value_heads", default=n_head),
        "d_ff": g("intermediate_size"),
        "ffn": "swiglu",
        "vocab_size": g("vocab_size"),
        "max_seq_len": g("max_position_embeddings"),
        "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "norm": "rmsnorm",
        "positional": "rope",
    }


# quantization_config.quant_method -> the weight format of the linear layers it stores
_GPTQ_BITS = {4: "int4", 8: "int8"}
_MODELOPT_ALGOS = {"FP8": "fp8", "NVFP4": "nvfp4"}


def _checkpoint_formats(cfg: Mapping[str, Any], where: str, moe: bool) -> dict[str, str]:
    """The weight format a config.json's ``quantization_config`` says the checkpoint stores, as
    ``checkpoint_dtype`` (every linear layer of the blocks) or ``checkpoint_expert_dtype`` (the routed
    experts only: gpt-oss leaves attention, router and embeddings out of its MXFP4). A method whose
    format is not one of ours is refused: pricing its weights at bf16 would be silently wrong."""
    q = cfg.get("quantization_config")
    if q is None:
        return {}
    w = f"{where}: field 'quantization_config'"
    if not isinstance(q, Mapping):
        raise ProfileError(f"{w}: expected an object, got {q!r:.60}")
    method = q.get("quant_method")
    if method == "fp8":  # DeepSeek-V3 / Kimi-K2: e4m3 with one scale per 128 x 128 block
        fmt = "fp8"
    elif method in ("mxfp4", "nvfp4"):
        fmt = method
    elif method in ("gptq", "awq"):
        fmt = _GPTQ_BITS.get(q.get("bits"))
        if fmt is None:
            raise ProfileError(f"{w}: {method} with bits={q.get('bits')!r} is not modelled (4 or 8)")
    elif method == "modelopt":
        fmt = _MODELOPT_ALGOS.get(q.get("quant_algo"))
        if fmt is None:
            raise ProfileError(f"{w}: modelopt quant_algo {q.get('quant_algo')!r} is not modelled "
                               f"({', '.join(_MODELOPT_ALGOS)})")
    else:
        raise ProfileError(f"{w}: quant_method {method!r} is not modelled (fp8, mxfp4, nvfp4, gptq, awq, "
                           "modelopt); remove it and give --weight-dtype")
    skipped = [str(m) for m in q.get("modules_to_not_convert") or ()]
    if moe and any("attn" in m for m in skipped):  # attention left out: only the experts are stored so
        return {"checkpoint_expert_dtype": fmt}
    return {"checkpoint_dtype": fmt}


@hf_keys.checked
def model_from_hf_config(cfg: Mapping[str, Any], where: str, name: str) -> ModelSpec:
    """Map a Hugging Face ``config.json`` to the profile schema, then validate it."""
    if not isinstance(cfg, Mapping):
        raise ProfileError(f"{where}: expected a JSON object")
    mt = cfg.get("model_type")
    g = lambda *keys, default=None: _hf_get(cfg, where, *keys, default=default)  # noqa: E731
    out: dict[str, Any] = {"name": name}
    if mt in ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3"):
        if mt.startswith("qwen2"):  # Qwen2Attention: q, k, v with biases, o_proj and the FFN without (no config key)
            out |= _rope_decoder_fields(cfg, g) | {"bias": False, "qkv_bias": True}
        else:
            out |= _rope_decoder_fields(cfg, g) | {"bias": _projection_biases(cfg, where, mt)}
        if mt in ("qwen3", "qwen3_moe"):  # Qwen3Attention normalises each query and key head (q_norm, k_norm)
            out["qk_norm"] = True
        if cfg.get("head_dim"):
            out["head_dim"] = cfg["head_dim"]
        window = cfg.get("sliding_window")
        if window and mt == "llama":  # LlamaConfig has no window: e.g. a Gemma-2 config labelled llama
            raise ProfileError(f"{where}: field 'sliding_window': {window} would be dropped (model_type llama "
                               "has no sliding window); label the config with its own model_type")
        n_window = _windowed_layers(cfg, where, mt, out["n_layer"]) if window else 0
        if n_window and n_window >= out["n_layer"]:
            out["sliding_window"] = window
        if mt == "mixtral":
            out |= {"n_expert": g("num_local_experts"), "n_expert_active": g("num_experts_per_tok")}
        if mt in ("qwen2_moe", "qwen3_moe"):
            out |= _qwen_moe_layers(cfg, g, out["n_layer"])
        if n_window and n_window < out["n_layer"]:  # some layers windowed, the rest full: a stack
            if "layers" in out:
                raise ProfileError(f"{where}: field 'sliding_window': windowed layers in a stack of dense and MoE "
                                   f"layers are not modelled (model_type {mt})")
            n, types = out["n_layer"], cfg.get("layer_types")
            # which layers: layer_types says it per layer; qwen windows the last ones (from max_window_layers)
            windowed = [t == "sliding_attention" for t in types] if isinstance(types, list) and types \
                else [i >= n - n_window for i in range(n)]
            out |= _ordered([{"count": n_window, "sliding_window": window},
                             {"count": n - n_window, "sliding_window": None}], [0 if w else 1 for w in windowed])
    elif mt == "gpt_oss":
        n_head, n_layer = g("num_attention_heads"), g("num_hidden_layers")
        if cfg.get("attention_bias") is False:
            raise ProfileError(f"{where}: field 'attention_bias': false is not modelled for gpt_oss "
                               "(its experts keep their biases)")
        out |= _rope_decoder_fields(cfg, g) | {
            "head_dim": g("head_dim"),
            "bias": True,  # q, k, v, o and every expert's projections
            "attention_sinks": True,
            "router_bias": True,
            "n_expert": g("num_local_experts"),
            "n_expert_active": g("num_experts_per_tok", "experts_per_token"),
        }
        out |= _attention_layers(cfg, where, n_layer, g("sliding_window"))
    elif mt == "gemma3":  # the multimodal wrapper: the language model is its text_config (the vision tower is not modelled)
        text = cfg.get("text_config")
        if not isinstance(text, Mapping):
            raise ProfileError(f"{where}: field 'text_config': missing or not an object (gemma3 keeps its language model there)")
        outer = {k: cfg[k] for k in ("quantization_config",) if k in cfg}  # the checkpoint's format is the wrapper's
        return model_from_hf_config(dict(text) | outer | {"model_type": "gemma3_text"}, f"{where}: text_config", name)
    elif mt == "gemma3_text":
        # Gemma3TextConfig's defaults where the published configs leave keys out (gemma-3-27b-it's text_config
        # gives only the sizes): vocab 262208, 131072 positions, one full-attention layer in 6, tied embeddings
        n_layer = g("num_hidden_layers")
        pattern = cfg.get("sliding_window_pattern") or 6
        out |= {
            "n_layer": n_layer,
            "d_model": g("hidden_size"),
            "n_head": g("num_attention_heads"),
            "n_kv_head": g("num_key_value_heads"),
            "head_dim": g("head_dim"),
            "d_ff": g("intermediate_size"),
            "ffn": "geglu",
            "vocab_size": g("vocab_size", default=262208),
            "max_seq_len": g("max_position_embeddings", default=131072),
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", True)),
            "norm": "rmsnorm",
            "positional": "rope",
            "bias": bool(cfg.get("attention_bias")),
            "norms_per_layer": 4,
            "qk_norm": True,  # Gemma3Attention's q_norm and k_norm
        }
        if cfg.get("layer_types") is not None:
            out |= _attention_layers(cfg, where, n_layer, g("sliding_window"))
        else:  # layer i is global when (i + 1) is a multiple of the pattern, as transformers builds it
            n_full = n_layer // pattern
            out |= _ordered([{"count": n_layer - n_full, "sliding_window": g("sliding_window")},
                             {"count": n_full, "sliding_window": None}],
                            [0 if (i + 1) % pattern else 1 for i in range(n_layer)])
    elif mt == "llama4":  # the multimodal wrapper: the language model is its text_config, plus the vision tower's weights
        text = cfg.get("text_config")
        if not isinstance(text, Mapping):
            raise ProfileError(f"{where}: field 'text_config': missing or not an object (llama4 keeps its language model there)")
        outer = {k: cfg[k] for k in ("quantization_config",) if k in cfg}  # the checkpoint's format is the wrapper's
        text = dict(text) | outer | {"model_type": "llama4_text"}
        if "tie_word_embeddings" not in text and cfg.get("tie_word_embeddings") is not None:
            text["tie_word_embeddings"] = cfg["tie_word_embeddings"]
        spec = model_from_hf_config(text, f"{where}: text_config", name)
        vision = cfg.get("vision_config")
        if vision is None:
            return spec
        if not isinstance(vision, Mapping):
            raise ProfileError(f"{where}: field 'vision_config': must be an object, got {vision!r:.60}")
        return replace(spec, vision_params=llama4_vision_params(vision, spec.d_model, f"{where}: vision_config"))
    elif mt == "llama4_text":
        out |= _llama4_text(cfg, g, where)
    elif mt in ("deepseek_v3", "kimi_k2"):
        n_layer, n_head = g("num_hidden_layers"), g("num_attention_heads")
        n_kv = g("num_key_value_heads", default=n_head)
        if n_kv != n_head:
            raise ProfileError(f"{where}: field 'num_key_value_heads': {n_kv} differs from num_attention_heads "
                               f"{n_head}; latent attention has one K/V per query head")
        first_dense = cfg.get("first_k_dense_replace") or 0
        freq = cfg.get("moe_layer_freq") or 1
        # as transformers builds them: MoE where i >= first_k_dense_replace and i % moe_layer_freq == 0
        moe_at = [i >= first_dense and i % freq == 0 for i in range(n_layer)]
        n_moe = sum(moe_at)
        out |= _rope_decoder_fields(cfg, g) | {
            "head_dim": g("qk_nope_head_dim"),
            "kv_lora_rank": g("kv_lora_rank"),
            "q_lora_rank": cfg.get("q_lora_rank") or 0,
            "qk_rope_head_dim": g("qk_rope_head_dim"),
            "v_head_dim": g("v_head_dim"),
            "d_ff": g("moe_intermediate_size"),  # the routed experts' width (dense layers: intermediate_size)
            "bias": bool(cfg.get("attention_bias")),
            "n_expert": g("n_routed_experts"),
            "n_expert_active": g("num_experts_per_tok"),
            "d_ff_shared": (cfg.get("n_shared_experts") or 0) * g("moe_intermediate_size"),
            "shared_expert_gate": False,
            # noaux_tc routing adds a per-expert score correction (e_score_correction_bias)
            "router_bias": cfg.get("topk_method") == "noaux_tc",
        }
        if n_moe < n_layer:
            out["layers"] = [{"count": n_moe}, {"count": n_layer - n_moe, "n_expert": 1, "d_ff": g("intermediate_size")}]
            out["layer_order"] = [0 if moe else 1 for moe in moe_at]  # the first_k_dense_replace dense layers first
    elif mt == "gpt2":
        d = g("n_embd", "hidden_size")
        out |= {
            "n_layer": g("n_layer", "num_hidden_layers"),
            "d_model": d,
            "n_head": g("n_head", "num_attention_heads"),
            "d_ff": cfg.get("n_inner") or 4 * d,
            "ffn": "gelu",
            "vocab_size": g("vocab_size"),
            "max_seq_len": g("n_positions", "n_ctx", "max_position_embeddings"),
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", True)),
            "norm": "layernorm",
            "positional": "learned",
            "bias": True,
        }
    elif mt == "opt":
        proj = cfg.get("word_embed_proj_dim")
        if proj is not None and proj != g("hidden_size"):
            raise ProfileError(
                f"{where}: field 'word_embed_proj_dim': {proj} differs from hidden_size {g('hidden_size')}; "
                "OPT's project_in/project_out layers (opt-350m) are not modelled")
        out |= {
            "n_layer": g("num_hidden_layers"),
            "d_model": g("hidden_size"),
            "n_head": g("num_attention_heads"),
            "d_ff": g("ffn_dim"),
            "ffn": "gelu",
            "vocab_size": g("vocab_size"),
            "max_seq_len": g("max_position_embeddings"),
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", True)),
            "norm": "layernorm",
            "positional": "learned",
            "bias": bool(cfg.get("enable_bias", True)),
        }
    elif mt == "gpt_neox":
        out |= {
            "n_layer": g("num_hidden_layers"),
            "d_model": g("hidden_size"),
            "n_head": g("num_attention_heads"),
            "d_ff": g("intermediate_size"),
            "ffn": "gelu",
            "vocab_size": g("vocab_size"),
            "max_seq_len": g("max_position_embeddings"),
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
            "norm": "layernorm",
            "positional": "rope",
            "bias": True,
        }
    else:
        known = ("llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, phi3, gpt_oss, gemma3, gemma3_text, "
                 "llama4, llama4_text, deepseek_v3, kimi_k2, gpt2, opt, gpt_neox")
        raise ProfileError(f"{where}: field 'model_type': unsupported {mt!r} (supported: {known})")
    out |= _checkpoint_formats(cfg, where, moe=(out.get("n_expert") or 1) > 1)
    return model_from_mapping(out, where, source=where)
