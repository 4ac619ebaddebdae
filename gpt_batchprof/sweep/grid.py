"""What a sweep runs: a plain-data spec, resolved once, expanded into points.

A sweep is plain data (as in triton's ``Benchmark``): lists of models, hardware, phases,
batch sizes, sequence lengths, operators, dtypes and attention modes. Its points are the
cartesian product. No Rich, Typer or torch here; ``yaml`` is imported inside the loader.

``seq_len`` has one meaning in every workload: the tokens of context the step works at,
the prompt for prefill and generation, the cache for decode (an operator's own
``new_tokens`` is then ``seq_len`` in prefill and 1 in decode).

Workloads:
- ``gpt``: operators of a GPT forward step (seed 000). ``op`` is an operator name or a group.
- ``mlp``: seed 002's MLP: ``depth`` square layers of ``width`` (the model's d_model),
  input ``batch x width``. Phase ``forward``, seq_len 1.
- ``generation``: a whole request (prompt ``seq_len``, ``gen_len`` tokens generated):
  end-to-end latency and throughput per batch (seed 000's batch-2 / batch-4 trade-off).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

from gpt_batchprof.analytic.gpt import ATTENTION_MODES, PHASES
from gpt_batchprof.analytic.ops import BLOCK_DENSE_OPS, OP_GROUPS, OP_NAMES
from gpt_batchprof.analytic.parallel import Parallelism
from gpt_batchprof.analytic.roofline import LAUNCH_MODES
from gpt_batchprof.analytic.serving import check_length
from gpt_batchprof.analytic.ops import BLOCK_DENSE_OPS, OP_GROUPS, OP_NAMES, SHARED_EXPERT_OPS
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import ACT_DTYPES, HardwareSpec, ModelSpec, load_hardware, load_model, model_from_mapping

WORKLOADS = ("gpt", "mlp", "generation")
MODES = ("analytic", "live", "both")

# Operator selectors a gpt sweep accepts besides single operator names. A group point is
# the sum of its operators (time, FLOPs, bytes), i.e. those kernels run back to back.
OP_SELECTORS: dict[str, tuple[str, ...]] = {
    "dense": OP_GROUPS["dense"],  # every weight matmul, LM head included
    "block-dense": BLOCK_DENSE_OPS + ("moe_router",),  # a block's weight matmuls (seed 000's "dense layers")
    "attention": OP_GROUPS["attention"],  # QK^T, softmax, x V (or the fused kernel)
    "ffn": ("ffn_gate", "ffn_up", "ffn_down") + SHARED_EXPERT_OPS,  # the feed-forward network
    "block": tuple(o for o in OP_NAMES if o != "lm_head"),  # every operator of the blocks
    "step": OP_NAMES,  # the whole forward step
}
SYNTHETIC_VOCAB = 50257  # GPT-2's, for the LM head of synthetic models


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """Everything that defines a sweep's grid. Lists are tuples; every field is plain data.

    ``models``: built-in names, profile files, or ``d<N>`` for a synthetic GPT with
    d_model N (n_head N/128, d_ff 4N, GELU, ``layers`` layers) or, for ``mlp``, width N.
    """

    workload: str = "gpt"
    models: tuple[str, ...] = ("d1024", "d2048", "d4096")
    hardware: tuple[str, ...] = ("a100-80gb",)
    phases: tuple[str, ...] = ("prefill", "decode")
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    seq_lens: tuple[int, ...] = (512,)  # tokens of context: the prompt (prefill, generation), the cache (decode)
    ops: tuple[str, ...] = ("block-dense", "attention")
    dtypes: tuple[str, ...] = ("fp16",)
    attentions: tuple[str, ...] = ("unfused",)
    layers: int = 1  # layers of synthetic GPTs
    depth: int = 8  # layers of the mlp workload
    gen_len: int = 128  # generation workload: tokens generated per sequence
    launch: str = "auto"  # launch overhead charged by predictions: auto | eager | graphs
    name: str = "custom"
    tp: int = 1  # tensor / pipeline / expert parallelism: figures per GPU (analytic.parallel)
    pp: int = 1
    ep: int = 1
    micro_batches: int = 1

    @property
    def parallel(self) -> Parallelism:
        return Parallelism(self.tp, self.pp, self.ep, self.micro_batches)

    @property
    def n_points(self) -> int:
        n = len(self.models) * len(self.hardware) * len(self.batches) * len(self.dtypes)
        if self.workload == "gpt":
            n *= len(self.phases) * len(self.seq_lens) * len(self.ops) * len(self.attentions)
        elif self.workload == "generation":
            n *= len(self.seq_lens) * len(self.attentions)
        return n

    def updated(self, **changes: Any) -> "SweepSpec":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True, slots=True)
class Point:
    """One cell of the grid; its fields are the identity that --resume keys on."""

    workload: str
    model: str
    hardware: str
    phase: str
    batch: int
    seq_len: int
    op: str
    dtype: str
    attention: str
    tp: int = 1
    pp: int = 1
    ep: int = 1

    def key(self) -> tuple[str, ...]:
        return tuple(str(getattr(self, f)) for f in IDENTITY)


IDENTITY = tuple(f.name for f in fields(Point))  # what --resume keys on; a results row's first columns


@dataclass(frozen=True)
class Grid:
    """A validated spec with its profiles loaded once."""

    spec: SweepSpec
    models: Mapping[str, ModelSpec]  # label -> spec (for mlp: label -> a spec carrying the width)
    hardware: Mapping[str, HardwareSpec]
    op_members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # selector -> op names

    def __len__(self) -> int:
        return self.spec.n_points

    def points(self) -> Iterator[Point]:
        """Model-major, then hardware, dtype, attention, phase, seq_len, batch; op innermost
        (consecutive points share one operator list)."""
        s = self.spec
        par = (s.tp, s.pp, s.ep)
        if s.workload == "gpt":
            combos = itertools.product(self.models, s.hardware, s.dtypes, s.attentions, s.phases, s.seq_lens,
                                       s.batches, s.ops)
            for m, hw, dt, at, ph, sl, b, op in combos:
                yield Point("gpt", m, hw, ph, b, sl, op, dt, at, *par)
        elif s.workload == "mlp":
            for m, hw, dt, b in itertools.product(self.models, s.hardware, s.dtypes, s.batches):
                yield Point("mlp", m, hw, "forward", b, 1, "mlp", dt, "-", *par)
        else:
            for m, hw, dt, at, sl, b in itertools.product(self.models, s.hardware, s.dtypes, s.attentions,
                                                          s.seq_lens, s.batches):
                yield Point("generation", m, hw, "generation", b, sl, "e2e", dt, at, *par)


# --------------------------------------------------------------------------- models


def synthetic_gpt(d_model: int, layers: int = 1) -> ModelSpec:
    """A GPT given only its hidden size, as the articles' microbenchmarks use.

    n_head = d_model / 128 (at least 1; one head when 128 does not divide d_model),
    d_ff = 4 d_model, GELU FFN, LayerNorm, GPT-2's vocabulary, no practical length limit.
    """
    if d_model < 1:
        raise BatchprofError(f"impossible shape: d_model={d_model}")
    n_head = d_model // 128 if d_model % 128 == 0 and d_model >= 128 else 1
    return model_from_mapping(
        {"name": f"gpt-d{d_model}" + (f"-l{layers}" if layers != 1 else ""), "n_layer": layers,
         "d_model": d_model, "n_head": n_head, "d_ff": 4 * d_model, "ffn": "gelu",
         "vocab_size": SYNTHETIC_VOCAB, "max_seq_len": 1 << 30},
        f"synthetic d_model={d_model}", source="synthetic",
    )


def _synthetic_width(ref: str) -> int | None:
    if len(ref) > 1 and ref[0] == "d" and ref[1:].isdigit():
        return int(ref[1:])
    return None


def _resolve_model(ref: str, spec: SweepSpec) -> tuple[str, ModelSpec]:
    width = _synthetic_width(ref)
    if spec.workload == "mlp":
        if width is None:
            raise BatchprofError(f"mlp sweeps take widths (d<N> or --d-model N), not the model '{ref}'")
        m = synthetic_gpt(width, spec.depth)
        return f"mlp-w{width}-x{spec.depth}", m
    if width is not None:
        m = synthetic_gpt(width, spec.layers)
        return m.name, m
    m = load_model(ref)
    return m.name, m


def resolve(spec: SweepSpec) -> Grid:
    """Validate every list of the spec and load its profiles; errors name the bad value."""
    _check(spec)
    models: dict[str, ModelSpec] = {}
    for ref in spec.models:
        label, m = _resolve_model(ref, spec)
        models.setdefault(label, m)
    hardware = {}
    for ref in spec.hardware:
        hw = load_hardware(ref)
        for dt in spec.dtypes:
            hw.peak(dt)  # a missing peak is an error now, not after half the sweep
        hardware[ref] = hw
    par = spec.parallel
    if spec.workload == "mlp" and not par.is_single:
        raise BatchprofError("--tp/--pp/--ep shard a GPT; the mlp workload has nothing to shard")
    for m in models.values():
        for hw in hardware.values():
            par.check(m, hw)
    members = {}
    if spec.workload == "gpt":
        for sel in spec.ops:
            members[sel] = OP_SELECTORS.get(sel, (sel,))
        _check_ops_exist(models, spec, members)
    if spec.workload in ("gpt", "generation"):
        s = max(spec.seq_lens)
        for label, m in models.items():
            if spec.workload == "generation":  # prompt s, then gen_len - 1 decode steps
                check_length(m, s + spec.gen_len - 1, f"--seq-len {s} + --gen-len {spec.gen_len} - 1 ({label})")
            elif "decode" in spec.phases:  # decode at s cached tokens embeds position s
                check_length(m, s + 1, f"--seq-len {s} cached + 1 decoded ({label})")
            else:  # prefill of s tokens
                check_length(m, s, f"--seq-len {s} ({label})")
    return Grid(spec, models, hardware, members)


def _check_ops_exist(models: Mapping[str, ModelSpec], spec: SweepSpec, members: Mapping[str, tuple[str, ...]]) -> None:
    from gpt_batchprof.analytic.gpt import Dtypes, enumerate_ops

    for label, m in models.items():
        for at in spec.attentions:
            present = {o.op for o in enumerate_ops(m, "decode", 1, kv_len=1, dtypes=Dtypes(), attention=at,
                                                   parallel=spec.parallel)}
            for sel, names in members.items():
                if not present.intersection(names):
                    raise BatchprofError(f"--op {sel}: model {label} has no such operator with {at} attention "
                                         f"(it has {', '.join(sorted(present))})")


def _nonempty(name: str, values: tuple) -> None:
    if not values:
        raise BatchprofError(f"sweep: '{name}' is empty")


def _check(spec: SweepSpec) -> None:
    if spec.workload not in WORKLOADS:
        raise BatchprofError(f"unknown workload '{spec.workload}' (choose from {', '.join(WORKLOADS)})")
    for name in ("models", "hardware", "batches", "dtypes"):
        _nonempty(name, getattr(spec, name))
    for name in ("batches", "seq_lens"):
        bad = [v for v in getattr(spec, name) if not isinstance(v, int) or isinstance(v, bool) or v < 1]
        if bad:
            raise BatchprofError(f"impossible shape: {name} must be integers >= 1, got {bad[0]!r}")
    spec.parallel  # noqa: B018 - validates tp/pp/ep/micro_batches (one clear line each)
    for name, value in (("layers", spec.layers), ("depth", spec.depth), ("gen_len", spec.gen_len)):
        if not isinstance(value, int) or value < 1:
            raise BatchprofError(f"sweep: {name} must be an integer >= 1, got {value!r}")
    if spec.launch not in ("auto",) + LAUNCH_MODES:
        raise BatchprofError(f"--launch: unknown mode '{spec.launch}' (choose from auto, {', '.join(LAUNCH_MODES)})")
    for dt in spec.dtypes:
        if dt not in ACT_DTYPES:
            raise BatchprofError(f"unknown dtype '{dt}' (choose from {', '.join(ACT_DTYPES)})")
    if spec.workload == "mlp":
        return
    _nonempty("seq_lens", spec.seq_lens)
    _nonempty("attentions", spec.attentions)
    for at in spec.attentions:
        if at not in ATTENTION_MODES:
            raise BatchprofError(f"unknown attention mode '{at}' (choose from {', '.join(ATTENTION_MODES)})")
    if spec.workload == "gpt":
        _nonempty("phases", spec.phases)
        _nonempty("ops", spec.ops)
        for ph in spec.phases:
            if ph not in PHASES:
                raise BatchprofError(f"unknown phase '{ph}' (choose from {', '.join(PHASES)})")
        known = tuple(OP_SELECTORS) + OP_NAMES
        for op in spec.ops:
            if op not in known:
                raise BatchprofError(f"unknown operator or group '{op}' (choose from {', '.join(known)})")


# --------------------------------------------------------------------------- YAML sweep files

_LIST_FIELDS = {"models", "hardware", "phases", "batches", "seq_lens", "ops", "dtypes", "attentions"}
_ALIASES = {"model": "models", "batch": "batches", "seq_len": "seq_lens", "phase": "phases", "op": "ops",
            "dtype": "dtypes", "attention": "attentions", "d_model": "d_models", "width": "d_models",
            "widths": "d_models"}


def _as_tuple(key: str, v: Any) -> tuple:
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list):
        raise BatchprofError(f"sweep file: field '{key}': expected a list or a single value, got {v!r}")
    if key in ("batches", "seq_lens", "d_models"):
        out = []
        for x in v:
            if isinstance(x, str):
                from gpt_batchprof.lists import parse_int_list

                out.extend(parse_int_list(x, key))
            elif isinstance(x, int) and not isinstance(x, bool):
                out.append(x)
            else:
                raise BatchprofError(f"sweep file: field '{key}': expected integers, got {x!r}")
        return tuple(out)
    for x in v:
        if not isinstance(x, str):
            raise BatchprofError(f"sweep file: field '{key}': expected names, got {x!r}")
    return tuple(v)


def spec_from_mapping(data: Any, where: str, base: SweepSpec | None = None) -> SweepSpec:
    """A sweep file's mapping on top of ``base`` (a preset, or the defaults)."""
    if not isinstance(data, Mapping):
        raise BatchprofError(f"{where}: expected a mapping of sweep fields, got {type(data).__name__}")
    base = base or SweepSpec()
    known = {f.name for f in fields(SweepSpec)} | {"d_models", "preset"}
    changes: dict[str, Any] = {}
    d_models: tuple[int, ...] = ()
    for raw_key, v in data.items():
        key = _ALIASES.get(raw_key, raw_key)
        if key not in known:
            from gpt_batchprof.files import unknown_key_error

            raise unknown_key_error(where, raw_key, known)
        if key == "preset":
            continue
        if key == "d_models":
            d_models = _as_tuple(key, v)
        elif key in _LIST_FIELDS:
            changes[key] = _as_tuple(key, v)
        elif key in ("layers", "depth", "gen_len", "tp", "pp", "ep", "micro_batches"):
            if not isinstance(v, int) or isinstance(v, bool):
                raise BatchprofError(f"{where}: field '{key}': expected an integer, got {v!r}")
            changes[key] = v
        else:
            if not isinstance(v, str):
                raise BatchprofError(f"{where}: field '{key}': expected a string, got {v!r}")
            changes[key] = v
    if d_models:
        changes["models"] = changes.get("models", ()) + tuple(f"d{d}" for d in d_models)
    return replace(base, **changes)


def load_sweep_file(path: Path) -> Mapping[str, Any]:
    from gpt_batchprof.files import load_yaml

    data = load_yaml(path)
    if not isinstance(data, Mapping):
        raise BatchprofError(f"{path}: expected a mapping of sweep fields, got {type(data).__name__}")
    return data
