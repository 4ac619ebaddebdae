"""Collectives measured live: N processes through torch.distributed (gloo on the CPU, NCCL on CUDA).

``time_collectives`` spawns ``world`` processes (``torch.multiprocessing.start_processes``,
rendezvous through a temporary file, so no port is needed), and times each requested call
(all-reduce, all-to-all, send/recv) at its exact message size. Every timed call starts
right after a barrier; its time is the slowest rank's (an all-reduce MAX over the ranks'
samples), as a collective is only done when every rank is. Send/recv is timed as a
ping-pong between ranks 0 and 1, halved (one way). Repetition counts are agreed between
ranks (the MAX of each rank's choice) so that no rank waits for a call that never comes.

``calibrate_interconnect`` sweeps all-reduce message sizes and turns the times into the
interconnect section of a hardware profile: bus bandwidth (NCCL-tests' definition,
``algbw x 2 (N-1)/N``) at its best, and the per-hop latency from the smallest message.
``torch`` is imported inside functions only.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.measure.timing import Measurement, call_counts

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
CALL_OPS = ("tp_allreduce", "ep_alltoall", "pp_sendrecv")
ELEMENT_BYTES = 4  # messages are float32 (gloo and NCCL reduce it everywhere); sizes are exact in bytes


@dataclass(frozen=True, slots=True)
class CollectiveCall:
    """One collective at one message size: ``message_bytes`` per rank, over ``ranks`` processes."""

    op: str  # tp_allreduce | ep_alltoall | pp_sendrecv
    message_bytes: int
    ranks: int

    def __post_init__(self) -> None:
        if self.op not in CALL_OPS:
            raise BatchprofError(f"no live timing for collective '{self.op}' (have: {', '.join(CALL_OPS)})")
        if self.ranks < 2:
            raise BatchprofError(f"{self.op}: a collective needs at least 2 ranks, got {self.ranks}")


def check_world(device: str, world: int) -> str:
    """The backend for ``world`` processes on ``device``; one clear line when it cannot run here."""
    if world < 2:
        raise BatchprofError(f"live collectives need --tp (or --pp / --ep) of at least 2, got {world}")
    if device == "cuda":
        import torch

        have = torch.cuda.device_count()
        if have < world:
            raise BatchprofError(
                f"NCCL over {world} GPUs is not possible here: torch sees {have} CUDA device(s). Run on a node with "
                f">= {world} GPUs (e.g. `gpt-batchprof bench --device cuda --tp {world}`; see docs/parallel.md), "
                "use --device cpu for gloo, or --op without collectives to time one GPU's sharded kernels")
        import torch.distributed as dist

        if not dist.is_nccl_available():
            raise BatchprofError("this torch build has no NCCL backend; use --device cpu (gloo)")
    else:
        import os

        import torch.distributed as dist

        most = max(8, 4 * (os.cpu_count() or 1))  # gloo: one process each, sharing this CPU's cores
        if world > most:
            raise BatchprofError(f"gloo over {world} processes on a {os.cpu_count()}-core CPU: at most {most} "
                                 "here (each process is a whole torch runtime)")
        if not dist.is_gloo_available():
            raise BatchprofError("this torch build has no gloo backend (needed for collectives on the CPU)")
    return BACKENDS[device]


def time_collectives(calls: Sequence[CollectiveCall], device: str = "cpu", warmup_s: float = 0.02,
                     rep_s: float = 0.1, min_reps: int = 5, max_reps: int = 200) -> list[Measurement]:
    """Seconds per call of each of ``calls`` (in order), measured across real processes."""
    if not calls:
        return []
    world = max(c.ranks for c in calls)
    backend = check_world(device, world)
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="gpt-batchprof-dist-") as tmp:
        init, out = os.path.join(tmp, "rendezvous"), os.path.join(tmp, "times.json")
        spec = [(c.op, c.message_bytes, c.ranks) for c in calls]
        try:
            mp.start_processes(_worker, args=(world, backend, device, init, out, spec, warmup_s, rep_s,
                                              min_reps, max_reps),
                               nprocs=world, join=True, start_method="spawn")
        except mp.ProcessRaisedException as e:  # a rank failed: its first line, not a traceback
            last = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            raise BatchprofError(f"{backend} run over {world} processes failed: {last[-1] if last else e}") from None
        with open(out, encoding="utf-8") as fh:
            samples = json.load(fh)
    method = f"{backend}-{world}proc"
    return [Measurement(tuple(t), 0, method) for t in samples]


# --------------------------------------------------------------------------- inside each process


def _worker(rank: int, world: int, backend: str, device: str, init: str, out: str, spec: list,
            warmup_s: float, rep_s: float, min_reps: int, max_reps: int) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one host: loopback, whatever the hostname resolves to
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(1)  # the ranks share the CPU; one thread each, as gloo uses
    dist.init_process_group(backend, init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        groups: dict[int, Any] = {}
        for r in sorted({s[2] for s in spec}):  # every rank creates every group (a collective call)
            groups[r] = None if r == world else dist.new_group(list(range(r)))
        results = []
        for op, nbytes, ranks in spec:
            results.append(_time_one(op, nbytes, ranks, groups[ranks], rank, device, warmup_s, rep_s,
                                     min_reps, max_reps))
            dist.barrier()
        if rank == 0:
            with open(out, "w", encoding="utf-8") as fh:
                json.dump(results, fh)
    finally:
        dist.destroy_process_group()


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _time_one(op: str, nbytes: int, ranks: int, group, rank: int, device: str, warmup_s: float, rep_s: float,
              min_reps: int, max_reps: int) -> list[float]:
    """Samples (seconds) of one call, the slowest rank's; ranks outside the group only keep step."""
    import time

    import torch
    import torch.distributed as dist

    inside = rank < ranks
    n = max(1, math.ceil(nbytes / ELEMENT_BYTES))
    if op == "ep_alltoall":
        n = math.ceil(n / ranks) * ranks  # equal splits
    dev = f"cuda:{rank}" if device == "cuda" else "cpu"
    x = torch.ones(n, dtype=torch.float32, device=dev)
    y = torch.empty_like(x)

    def call() -> None:
        if op == "tp_allreduce":
            dist.all_reduce(x, group=group)
        elif op == "ep_alltoall":
            dist.all_to_all_single(y, x, group=group)
        elif rank == 0:  # pp_sendrecv: ping-pong, halved below
            dist.send(x, 1)
            dist.recv(y, 1)
        elif rank == 1:
            dist.recv(y, 0)
            dist.send(x, 0)
        _sync(device)

    clock = time.perf_counter
    est = 0.0
    if inside:
        call()  # first call: connection set-up, allocations
        t0 = clock()
        call()
        est = clock() - t0
    warm, reps = call_counts(est, warmup_s, rep_s, min_reps, max_reps)
    agreed = torch.tensor([warm, reps], dtype=torch.int64, device=dev)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)  # all ranks: same counts everywhere
    warm, reps = int(agreed[0]), int(agreed[1])
    times = torch.zeros(reps, dtype=torch.float64, device=dev)
    if inside:
        for _ in range(warm):
            call()
        for i in range(reps):
            dist.barrier(group=group)
            t0 = clock()
            call()
            times[i] = clock() - t0
        if op == "pp_sendrecv":
            times = times / 2 if rank == 0 else torch.zeros_like(times)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)  # a collective ends when its slowest rank does
    return times.cpu().tolist()


# --------------------------------------------------------------------------- interconnect calibration


@dataclass(frozen=True, slots=True)
class LinkPoint:
    message_bytes: int
    time_s: float  # median per all-reduce
    algbw_bytes_per_s: float  # message / time
    busbw_bytes_per_s: float  # algbw x 2 (N-1) / N: what each link carried (NCCL-tests' bus bandwidth)


@dataclass(frozen=True, slots=True)
class LinkCalibration:
    backend: str
    ranks: int
    points: tuple[LinkPoint, ...]
    bandwidth_bytes_per_s: float  # best bus bandwidth
    latency_s: float  # per ring step, from the smallest message

    def interconnect(self, name: str | None = None):
        from gpt_batchprof.profiles import Interconnect

        return Interconnect(name or f"{self.backend} ({self.ranks} processes, measured)",
                            self.bandwidth_bytes_per_s, self.latency_s)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "ranks": self.ranks, "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
                "latency_s": self.latency_s,
                "points": [{"message_bytes": p.message_bytes, "time_s": p.time_s,
                            "algbw_bytes_per_s": p.algbw_bytes_per_s, "busbw_bytes_per_s": p.busbw_bytes_per_s}
                           for p in self.points]}


def fit_link(ranks: int, sizes: Sequence[int], times_s: Sequence[float], backend: str = "") -> LinkCalibration:
    """Bus bandwidth at its best over the sizes; latency per ring step from the smallest message.

    With the ring model t = 2(N-1)/N * S/B + 2(N-1) * a, the smallest message gives
    a = (t - 2(N-1)/N * S/B) / (2(N-1)), floored at 0.
    """
    f = 2.0 * (ranks - 1) / ranks
    points = tuple(LinkPoint(s, t, s / t, f * s / t) for s, t in zip(sizes, times_s))
    bw = max(p.busbw_bytes_per_s for p in points)
    small = min(points, key=lambda p: p.message_bytes)
    latency = max(0.0, (small.time_s - f * small.message_bytes / bw) / (2.0 * (ranks - 1)))
    return LinkCalibration(backend, ranks, points, bw, latency)


def calibrate_interconnect(device: str, ranks: int, quick: bool = False) -> LinkCalibration:
    """All-reduce times from 4 KiB up (to 4 MiB on the CPU, 256 MiB on GPUs; smaller with ``quick``)."""
    top = (1 << 20 if quick else 1 << 22) if device == "cpu" else (1 << 26 if quick else 1 << 28)
    sizes = []
    s = 4096
    while s <= top:
        sizes.append(s)
        s *= 4
    budget = 0.05 if quick else 0.2
    ms = time_collectives([CollectiveCall("tp_allreduce", s, ranks) for s in sizes], device,
                          warmup_s=budget / 4, rep_s=budget)
    return fit_link(ranks, sizes, [m.median_s for m in ms], BACKENDS[device])
