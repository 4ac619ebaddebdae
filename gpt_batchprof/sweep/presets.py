"""The articles' experiments as sweep specs (plain data), each with a CI-sized --quick form.

Hardware is the article's device; ``gpt-batchprof sweep`` replaces it with ``cpu-generic``
(and fp16 with fp32) when kernels are timed on a CPU, so that predicted and measured
rows describe the same machine. ``-H`` / ``--dtype`` override both.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.sweep.grid import SweepSpec


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    source: str
    description: str
    full: SweepSpec
    quick: SweepSpec

    def spec(self, quick: bool) -> SweepSpec:
        return self.quick if quick else self.full


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "dense-vs-attention",
            "seed 000",
            "Dense layers vs self-attention of synthetic GPT blocks, prefill and decode, batch 1..128, "
            "several hidden sizes and sequence lengths: decode dense layers batch almost for free, "
            "attention grows linearly with the batch.",
            full=SweepSpec(
                workload="gpt", models=("d1024", "d2048", "d4096"), hardware=("a100-80gb",),
                phases=("prefill", "decode"), batches=(1, 2, 4, 8, 16, 32, 64, 128),
                seq_lens=(128, 512, 2048), ops=("block-dense", "attention"), dtypes=("fp16",),
                name="dense-vs-attention",
            ),
            quick=SweepSpec(
                workload="gpt", models=("d128", "d256"), hardware=("a100-80gb",),
                phases=("prefill", "decode"), batches=(1, 4, 16), seq_lens=(32, 128),
                ops=("block-dense", "attention"), dtypes=("fp16",), name="dense-vs-attention",
            ),
        ),
        Preset(
            "mlp-batching",
            "seed 002",
            "An MLP of depth 8, widths 256..8192, batch 1..512: time stays flat while the layers are "
            "memory-bound (up to the ridge, ~216 on a T4) and grows with the batch after.",
            full=SweepSpec(
                workload="mlp", models=tuple(f"d{w}" for w in (256, 512, 1024, 2048, 4096, 8192)),
                hardware=("t4",), batches=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), dtypes=("fp16",),
                depth=8, name="mlp-batching",
            ),
            quick=SweepSpec(
                workload="mlp", models=("d128", "d256", "d512"), hardware=("t4",), batches=(1, 4, 16, 64),
                dtypes=("fp16",), depth=8, name="mlp-batching",
            ),
        ),
        Preset(
            "generation",
            "seed 000",
            "End-to-end generation latency and throughput vs batch for one model: batch 2 about doubles "
            "throughput at equal latency, batch 4 adds a little latency for ~3.5x.",
            full=SweepSpec(
                workload="generation", models=("gpt3-6.7b",), hardware=("a100-80gb",),
                batches=(1, 2, 4, 8, 16, 32, 64), seq_lens=(512,), dtypes=("fp16",), gen_len=128,
                name="generation",
            ),
            quick=SweepSpec(
                workload="generation", models=("d256",), hardware=("a100-80gb",), batches=(1, 2, 4, 8),
                seq_lens=(32,), dtypes=("fp16",), gen_len=8, layers=2, name="generation",
            ),
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise BatchprofError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})") from None
