"""Live timing of a sweep's operators, through the measure package (`bench`'s kernels and timers).

One operator is built at the exact shape of its OpCost (``measure.kernels.build_kernel``),
one launch is timed (``measure.timing``: CPU clock, or CUDA events with an L2 flush), and
the row's time is that launch's median times ``cost.launches`` (the layers). The
``generation`` workload instead runs a whole generation per batch
(``measure.generate``: one prefill, then gen_len - 1 decode steps on a growing cache).
torch is imported only when a ``LiveTimer`` is made.
"""

from __future__ import annotations

from typing import Any

from gpt_batchprof.analytic.gpt import Dtypes
from gpt_batchprof.analytic.ops import OpCost
from gpt_batchprof.profiles import ModelSpec


class LiveTimer:
    """Times OpCosts on ``device`` ('cpu', 'cuda' or 'auto') within per-kernel time budgets,
    through bench's one measuring path (``measure.bench.time_costs``)."""

    def __init__(self, device: str = "auto", warmup_s: float = 0.01, rep_s: float = 0.05,
                 timer: Any = None, threads: int | None = None, cache_bytes: float = 32e6):
        from gpt_batchprof.measure import device as dev
        from gpt_batchprof.measure.timing import default_timer

        self.kind = dev.resolve_device(device)
        dev.require_torch()
        self.threads = threads
        self.device = dev.device_name(self.kind)
        self.torch_version = dev.torch_version()
        self.timer = timer or default_timer(self.kind)
        self.warmup_s, self.rep_s = warmup_s, rep_s
        self.cache_bytes = cache_bytes
        self.unsupported: dict[str, str] = {}  # op -> why it was not timed (first reason seen)
        self._engines: dict[tuple, Any] = {}  # one reference model per (model, dtype, attention, length)

    def time_op(self, cost: OpCost, model: ModelSpec, dtype: str) -> tuple[float | None, float | None]:
        """(median, IQR) seconds of the operator over all its launches; (None, None) if the
        device cannot run it at this dtype or runs out of memory."""
        import torch

        from gpt_batchprof.measure.bench import time_costs, torch_threads

        with torch_threads(self.kind, self.threads), torch.inference_mode():
            t = time_costs(((cost, 1),), cost.launches, f"{cost.phase}/{cost.batch}/{cost.op}", model,
                           Dtypes.of(dtype), self.kind, self.timer, self.warmup_s, self.rep_s, self.cache_bytes)
        if t.status != "ok":
            reason = t.reason if t.status == "skipped" else f"out of memory on {self.device} at batch {cost.batch}"
            self.unsupported.setdefault(cost.op, reason)
            return None, None
        return t.time_s, t.iqr_s

    def time_generation(self, model: ModelSpec, batch: int, prompt_len: int, gen_len: int, dtype: str,
                        attention: str):
        """One real generation at ``batch`` (a ``measure.generate.GenerationRun``), or None when the
        device cannot run it (dtype, memory). The model is built once per (model, dtype, attention)."""
        from gpt_batchprof.analytic.serving import Scenario
        from gpt_batchprof.errors import BatchprofError
        from gpt_batchprof.measure import generate as G
        from gpt_batchprof.measure.bench import free_memory, is_oom, torch_threads

        import torch

        sc = Scenario(prompt_len=prompt_len, gen_len=gen_len, dtypes=Dtypes.of(dtype), attention=attention)
        settings = G.GenerateSettings(self.kind, self.device, self.torch_version,
                                      self.threads or torch.get_num_threads())
        key = (model, dtype, attention, sc.positions)
        try:
            with torch_threads(self.kind, self.threads), torch.inference_mode():
                if key not in self._engines:
                    self._engines.clear()  # one model in memory at a time
                    self._engines[key] = G.ReferenceEngine(model, sc, settings)
                return G.measure_batch(self._engines[key], batch, sc, settings)[0]
        except BatchprofError as e:
            self.unsupported.setdefault("generation", str(e))
        except Exception as e:  # noqa: BLE001 - as in bench: one batch out of memory, the rest go on
            if not is_oom(e):
                raise
            free_memory(self.kind)
            self.unsupported.setdefault("generation", f"out of memory on {self.device} at batch {batch}")
        return None
