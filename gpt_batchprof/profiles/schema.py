"""The profile schema: validate a model or hardware mapping (YAML, datasheet units) into its spec,
and write a hardware spec back out. Every error names the file and the field."""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from gpt_batchprof import files
from gpt_batchprof.errors import ProfileError
from gpt_batchprof.profiles.dtypes import PEAK_DTYPES, WEIGHT_DTYPES
from gpt_batchprof.profiles.fields import _Fields, link_fields
from gpt_batchprof.profiles.measured import implausible_rate, measured_from_mapping, measured_to_yaml_mapping
from gpt_batchprof.profiles.specs import (
    ENGINE_KEYS, FFN_KINDS, HARDWARE_KINDS, NORM_KINDS, POSITIONAL_KINDS, EngineOverhead, HardwareSpec, Interconnect,
    LayerGroup, ModelSpec,
)


@files.checked_keys(ProfileError)
def model_from_mapping(data: Mapping[str, Any], where: str, source: str = "") -> ModelSpec:
    """Validate a model profile mapping (YAML schema) and build the spec."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    f = _Fields(data, where)
    n_head = f.int("n_head")
    d_model = f.int("d_model")
    if f.has("head_dim"):
        head_dim = f.int("head_dim")
    else:
        if d_model % n_head:
            raise f.fail("d_model", f"{d_model} is not divisible by n_head={n_head}; give head_dim")
        head_dim = d_model // n_head
    n_kv_head = f.int("n_kv_head", default=n_head)
    if n_kv_head > n_head or n_head % n_kv_head:
        raise f.fail("n_kv_head", f"{n_kv_head} does not divide n_head={n_head}")
    n_expert = f.int("n_expert", default=1)
    n_expert_active = f.int("n_expert_active", default=min(2, n_expert) if n_expert > 1 else 1)
    if n_expert_active > n_expert:
        raise f.fail("n_expert_active", f"{n_expert_active} is more than n_expert={n_expert}")
    d_ff_shared = f.int("d_ff_shared", default=0, minimum=0)
    if d_ff_shared and n_expert == 1:
        raise f.fail("d_ff_shared", "a shared expert needs a mixture of experts (n_expert > 1)")
    sliding_window = f.int("sliding_window") if f.has("sliding_window") else None
    attention_chunk = f.int("attention_chunk") if f.has("attention_chunk") else None
    if sliding_window is not None and attention_chunk is not None:
        raise f.fail("attention_chunk", "a layer has either a sliding window or chunked attention, not both")
    n_layer, d_ff = f.int("n_layer"), f.int("d_ff")
    kv_lora = f.int("kv_lora_rank", default=0, minimum=0)
    norms_per_layer = f.int("norms_per_layer", default=2)
    if norms_per_layer not in (2, 4):
        raise f.fail("norms_per_layer", f"must be 2 (pre-norm) or 4 (pre- and post-norm, gemma), got {norms_per_layer}")
    local = ("sliding_window", "attention_chunk")
    if kv_lora and (sliding_window or attention_chunk or f.has("layers") and any(
            k in g for g in data.get("layers") or () if isinstance(g, Mapping) for k in local)):
        raise f.fail("kv_lora_rank", "latent attention with chunked attention or a sliding window is not modelled")
    groups, listed = _layer_groups(data.get("layers"), where, n_layer, LayerGroup(
        n_layer, sliding_window, d_ff, n_expert, n_expert_active, d_ff_shared, attention_chunk))
    order = _layer_order(data.get("layer_order"), where, n_layer, groups, listed)
    return ModelSpec(
        name=f.str("name"),
        n_layer=n_layer,
        d_model=d_model,
        n_head=n_head,
        n_kv_head=n_kv_head,
        head_dim=head_dim,
        d_ff=d_ff,
        ffn=f.str("ffn", choices=tuple(FFN_KINDS)),
        vocab_size=f.int("vocab_size"),
        max_seq_len=f.int("max_seq_len"),
        tied_embeddings=f.bool("tied_embeddings", False),
        norm=f.str("norm", default="layernorm", choices=NORM_KINDS),
        positional=f.str("positional", default="rope", choices=POSITIONAL_KINDS),
        bias=f.bool("bias", False),
        qkv_bias=f.bool("qkv_bias", False),
        n_expert=n_expert,
        n_expert_active=n_expert_active,
        d_ff_shared=d_ff_shared,
        sliding_window=sliding_window,
        attention_chunk=attention_chunk,
        kv_lora_rank=kv_lora,
        q_lora_rank=f.int("q_lora_rank", default=0, minimum=0),
        qk_rope_head_dim=f.int("qk_rope_head_dim", default=0 if not kv_lora else None, minimum=0 if not kv_lora else 1),
        v_head_dim=f.int("v_head_dim", default=0 if not kv_lora else head_dim, minimum=0),
        shared_expert_gate=f.bool("shared_expert_gate", True),
        norms_per_layer=norms_per_layer,
        attention_sinks=f.bool("attention_sinks", False),
        qk_norm=f.bool("qk_norm", False),
        router_bias=f.bool("router_bias", False),
        checkpoint_dtype=f.str("checkpoint_dtype", choices=WEIGHT_DTYPES) if f.has("checkpoint_dtype") else None,
        checkpoint_expert_dtype=_expert_format(f, n_expert),
        layer_groups=groups,
        layer_order=order,
        vision_params=f.int("vision_params", default=0, minimum=0),
        source=source,
    )


def _expert_format(f: _Fields, n_expert: int) -> str | None:
    if not f.has("checkpoint_expert_dtype"):
        return None
    if n_expert == 1:
        raise f.fail("checkpoint_expert_dtype", "a dense model has no routed experts to store apart")
    return f.str("checkpoint_expert_dtype", choices=WEIGHT_DTYPES)


LAYER_GROUP_KEYS = ("count", "sliding_window", "attention_chunk", "d_ff", "n_expert", "n_expert_active", "d_ff_shared")


def _layer_groups(raw: Any, where: str, n_layer: int,
                  model_level: LayerGroup) -> tuple[tuple[LayerGroup, ...], tuple[tuple[int, int], ...]]:
    """The ``layers:`` list: groups of ``count`` layers, each key replacing the model-level one
    (``sliding_window: null`` and ``attention_chunk: null``: full attention; a group that gives one of
    them drops the other it would inherit; ``n_expert: 1``: a dense FFN, whose ``d_ff`` is then
    required). Groups of the same kind are merged (the order of layers changes no figure on one
    device; pipeline stages read it from ``layer_order``). Also returns, per group as listed, the
    index of its merged group and its count."""
    if raw is None:
        return (), ()
    if not isinstance(raw, list) or not raw:
        raise ProfileError(f"{where}: field 'layers': must be a list of layer groups (count: N, ...), got {raw!r:.60}")
    groups: dict[tuple, LayerGroup] = {}
    listed: list[tuple[tuple, int]] = []
    for i, g in enumerate(raw):
        key = f"layers[{i}]"
        if not isinstance(g, Mapping):
            raise ProfileError(f"{where}: field '{key}': must be a mapping (count: N, ...), got {g!r:.60}")
        for k in g:
            if k not in LAYER_GROUP_KEYS:
                near = difflib.get_close_matches(str(k), LAYER_GROUP_KEYS, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else f" (known: {', '.join(LAYER_GROUP_KEYS)})"
                raise ProfileError(f"{where}: unknown field '{key}.{k}'{hint}")
        f = _Fields(g, where, prefix=f"{key}.")
        n_expert = f.int("n_expert", default=model_level.n_expert)
        dense = n_expert == 1
        active = f.int("n_expert_active", default=1 if dense else model_level.n_expert_active)
        if active > n_expert:
            raise f.fail("n_expert_active", f"{active} is more than n_expert={n_expert}")
        shared = f.int("d_ff_shared", default=0 if dense else model_level.d_ff_shared, minimum=0)
        if shared and dense:
            raise f.fail("d_ff_shared", "a shared expert needs a mixture of experts (n_expert > 1)")
        window = (f.int("sliding_window") if f.has("sliding_window") else None) if "sliding_window" in g \
            else model_level.sliding_window
        chunk = (f.int("attention_chunk") if f.has("attention_chunk") else None) if "attention_chunk" in g \
            else model_level.attention_chunk
        if "sliding_window" in g and "attention_chunk" not in g:
            chunk = None  # the group's own attention replaces the model's
        elif "attention_chunk" in g and "sliding_window" not in g:
            window = None
        if window is not None and chunk is not None:
            raise f.fail("attention_chunk", "a layer has either a sliding window or chunked attention, not both")
        d_ff = f.int("d_ff", default=model_level.d_ff if n_expert == model_level.n_expert else None)
        kind = (window, d_ff, n_expert, active, shared, chunk)
        own = f.int("count")
        listed.append((kind, own))
        groups[kind] = LayerGroup(own + (groups[kind].count if kind in groups else 0), *kind)
    total = sum(g.count for g in groups.values())
    if total != n_layer:
        raise ProfileError(f"{where}: field 'layers': the groups' counts add up to {total}, not n_layer={n_layer}")
    index = {kind: i for i, kind in enumerate(groups)}
    return tuple(groups.values()), tuple((index[kind], n) for kind, n in listed)


def _layer_order(raw: Any, where: str, n_layer: int, groups: tuple[LayerGroup, ...],
                 listed: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """``layer_order``: per layer, in the order the stack runs them, the index (from 0) of its group in
    the ``layers:`` list as written; a shorter list repeats until n_layer (``[0, 1]``: alternating).
    Without it the groups run in the order listed. Stored as indices of the merged groups, and
    empty when that is the groups one after another (see ``ModelSpec.layer_order``)."""
    if raw is None:
        seq = tuple(g for g, n in listed for _ in range(n))
    else:
        field = f"{where}: field 'layer_order'"
        if not listed:
            raise ProfileError(f"{field}: needs a 'layers:' list of layer groups to point into")
        if not isinstance(raw, list) or not raw or len(raw) > n_layer or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(listed) for i in raw):
            raise ProfileError(f"{field}: must be a list of at most n_layer={n_layer} indices of 'layers' groups "
                               f"(0 to {len(listed) - 1}), got {raw!r:.60}")
        cycled = [raw[i % len(raw)] for i in range(n_layer)]
        for i, (_, n) in enumerate(listed):
            if cycled.count(i) != n:
                raise ProfileError(f"{field}: places {cycled.count(i)} layers in layers[{i}], whose count is {n}")
        seq = tuple(listed[i][0] for i in cycled)
    contiguous = tuple(i for i, g in enumerate(groups) for _ in range(g.count))
    return () if seq == contiguous else seq


# Ways to give device memory, and their unit in bytes. HBM and GPU memory are binary
# (an "80 GB" H100 reports 81,559 MiB); DDR system memory is sold in decimal GB.
MEMORY_FIELDS = {"memory_bytes": 1.0, "memory_mib": 2.0**20, "memory_gib": 2.0**30, "memory_gb": 1e9}


def _memory_bytes(f: "_Fields") -> float:
    given = [k for k in MEMORY_FIELDS if f.has(k)]
    if len(given) != 1:
        why = "missing (required)" if not given else f"given {len(given)} times ({', '.join(given)}); keep one"
        raise f.fail("memory_bytes", f"{why}: one of {', '.join(MEMORY_FIELDS)}")
    return f.num(given[0]) * MEMORY_FIELDS[given[0]]


@files.checked_keys(ProfileError)
def hardware_from_mapping(data: Mapping[str, Any], where: str, source: str = "") -> HardwareSpec:
    """Validate a hardware profile mapping (datasheet units) and convert it to SI."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    f = _Fields(data, where)
    name = f.str("name")
    kind = f.str("kind", choices=HARDWARE_KINDS)
    memory_bytes = _memory_bytes(f)
    bandwidth = f.num("memory_bandwidth_gb_s") * 1e9
    peaks_raw = data.get("peak_tflops")
    if not isinstance(peaks_raw, Mapping) or not peaks_raw:
        raise f.fail("peak_tflops", "missing or not a mapping of dtype: TFLOP/s (e.g. fp16: 312)")
    peaks: dict[str, float] = {}
    pf = _Fields(peaks_raw, where)
    for key in peaks_raw:
        if key not in PEAK_DTYPES:
            raise ProfileError(
                f"{where}: field 'peak_tflops.{key}': unknown dtype (known: {', '.join(PEAK_DTYPES)})"
            )
        try:
            peaks[key] = pf.num(key) * 1e12
        except ProfileError:
            raise ProfileError(
                f"{where}: field 'peak_tflops.{key}': must be a number > 0, got {peaks_raw[key]!r}"
            ) from None
    price = f.num("price_per_hour_usd", default=0.0, positive=False) if f.has("price_per_hour_usd") else None
    interconnect = interconnect_from_mapping(data["interconnect"], where) if f.has("interconnect") else None
    engine = engine_from_mapping(data["engine"], where) if f.has("engine") else None
    hw = HardwareSpec(
        name=name,
        kind=kind,
        memory_bytes=memory_bytes,
        memory_bandwidth_bytes_per_s=bandwidth,
        peak_flops_per_s=peaks,
        launch_overhead_s=f.num("launch_overhead_us", default=0.0, positive=False) * 1e-6,
        graph_launch_overhead_s=(f.num("graph_launch_overhead_us", positive=False) * 1e-6
                                 if f.has("graph_launch_overhead_us") else None),
        l2_cache_bytes=f.num("l2_cache_mb", default=0.0, positive=False) * 1e6,
        price_per_hour_usd=price,
        source=source,
        interconnect=interconnect,
        measured=measured_from_mapping(data["measured"], where) if data.get("measured") is not None else None,
        engine=engine,
    )
    if hw.measured is not None:  # tables that cannot be this device's (issue 19): refused, not priced
        bad = implausible_rate(hw.measured, hw.peak_flops_per_s.get, hw.memory_bandwidth_bytes_per_s)
        if bad:
            raise ProfileError(f"{where}: field 'measured.tables.{bad[0]}': {bad[1]}")
    return hw


def engine_from_mapping(data: Any, where: str) -> EngineOverhead:
    """The optional ``engine:`` section (microseconds); unknown keys refused."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: field 'engine': expected a mapping ({', '.join(ENGINE_KEYS)})")
    unknown = [k for k in data if k not in ENGINE_KEYS]
    if unknown:
        raise ProfileError(f"{where}: field 'engine.{unknown[0]}': unknown key (known: {', '.join(ENGINE_KEYS)})")
    f = _Fields(data, where, prefix="engine.")
    return EngineOverhead(
        name=f.str("name"),
        per_step_s=f.num("per_step_us", default=0.0, positive=False) * 1e-6,
        per_layer_s=f.num("per_layer_us", default=0.0, positive=False) * 1e-6,
        per_request_s=f.num("per_request_us", default=0.0, positive=False) * 1e-6,
        source=f.str("source", default="") if f.has("source") else "",
    )


def interconnect_from_mapping(data: Any, where: str) -> Interconnect:
    """The optional ``interconnect:`` section (GB/s per direction, microseconds); unknown keys refused."""
    return Interconnect(*link_fields(data, where))


def hardware_to_yaml_mapping(hw: HardwareSpec) -> dict[str, Any]:
    """The inverse of :func:`hardware_from_mapping`: datasheet units, ready for YAML."""
    d: dict[str, Any] = {
        "name": hw.name,
        "kind": hw.kind,
        "memory_bytes": int(hw.memory_bytes),
        "memory_bandwidth_gb_s": round(hw.memory_bandwidth_bytes_per_s / 1e9, 3),
        "peak_tflops": {k: round(v / 1e12, 4) for k, v in hw.peak_flops_per_s.items()},
        "launch_overhead_us": round(hw.launch_overhead_s * 1e6, 3),
    }
    if hw.graph_launch_overhead_s is not None:
        d["graph_launch_overhead_us"] = round(hw.graph_launch_overhead_s * 1e6, 3)
    if hw.l2_cache_bytes:
        d["l2_cache_mb"] = round(hw.l2_cache_bytes / 1e6, 3)
    if hw.price_per_hour_usd is not None:
        d["price_per_hour_usd"] = hw.price_per_hour_usd
    if hw.engine is not None:
        e = hw.engine
        d["engine"] = {"name": e.name, "per_step_us": round(e.per_step_s * 1e6, 3),
                       "per_layer_us": round(e.per_layer_s * 1e6, 3), "per_request_us": round(e.per_request_s * 1e6, 3)}
        if e.source:
            d["engine"]["source"] = e.source
    if hw.measured is not None:
        d["measured"] = measured_to_yaml_mapping(hw.measured)
    if hw.interconnect is not None:
        ic = hw.interconnect
        d["interconnect"] = {"name": ic.name, "bandwidth_gb_s": round(ic.bandwidth_bytes_per_s / 1e9, 3),
                             "latency_us": round(ic.latency_s * 1e6, 3)}
    return d
