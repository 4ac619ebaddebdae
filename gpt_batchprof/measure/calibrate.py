"""Measured ceilings of this device: dense-matmul FLOP/s per dtype, memory bandwidth, launch overhead.

As mamf-finder does, the matmul peak is the best of a few large square shapes; shapes grow
until one call would exceed the per-call budget, so slow dtypes (fp16 on most CPUs) are
measured at a small size instead of stalling. Bandwidth comes from a large device copy
(bytes read + bytes written). Launch overhead is the median time of a tiny kernel.
The result converts to a HardwareSpec that analyze / bench / sweep accept.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import HardwareSpec, hardware_to_yaml_mapping
from gpt_batchprof.profiles.measured import MeasuredTables


@dataclass(frozen=True, slots=True)
class Calibration:
    device: str  # cpu | cuda
    device_name: str
    torch_version: str
    threads: int
    peak_flops_per_s: Mapping[str, float]
    peak_shapes: Mapping[str, int]  # square size at which each peak was reached
    memory_bandwidth_bytes_per_s: float
    launch_overhead_s: float
    memory_bytes: float
    l2_cache_bytes: float
    skipped: Mapping[str, str] = field(default_factory=dict)  # dtype -> why not measured
    date: str = ""
    link: Any = None  # measure.distributed.LinkCalibration when asked for (calibrate --tp N)

    def to_hardware(self, name: str | None = None, measured: MeasuredTables | None = None) -> HardwareSpec:
        return HardwareSpec(
            name=name or f"calibrated-{slug(self.device_name)}",
            kind="gpu" if self.device == "cuda" else "cpu",
            memory_bytes=self.memory_bytes,
            memory_bandwidth_bytes_per_s=self.memory_bandwidth_bytes_per_s,
            peak_flops_per_s=self._peaks(measured),
            launch_overhead_s=self.launch_overhead_s,
            l2_cache_bytes=self.l2_cache_bytes,
            source=f"gpt-batchprof calibrate on {self.device_name}, torch {self.torch_version}, {self.date}",
            measured=measured,
            interconnect=self.link.interconnect() if self.link is not None else None,
        )

    def _peaks(self, measured: MeasuredTables | None) -> dict[str, float]:
        """The peaks, each raised to the best rate the tables reached in its dtype: a peak some
        kernel beat is no ceiling (a busy machine during the few peak shapes, or a bmm shape that
        runs faster), and a roofline below its own calibrated times would be impossible."""
        if measured is None:
            return dict(self.peak_flops_per_s)
        from gpt_batchprof.profiles.measured import best_flop_rate

        return {dt: max(p, best_flop_rate(measured, dt)) for dt, p in self.peak_flops_per_s.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "device_name": self.device_name, "torch_version": self.torch_version,
            "threads": self.threads, "peak_flops_per_s": dict(self.peak_flops_per_s),
            "peak_shapes": dict(self.peak_shapes),
            "memory_bandwidth_bytes_per_s": self.memory_bandwidth_bytes_per_s,
            "launch_overhead_s": self.launch_overhead_s, "memory_bytes": self.memory_bytes,
            "l2_cache_bytes": self.l2_cache_bytes, "skipped": dict(self.skipped), "date": self.date,
            "interconnect": self.link.to_dict() if self.link is not None else None,
        }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "device"


def hardware_yaml(cal: Calibration, name: str | None = None, measured: MeasuredTables | None = None) -> str:
    """A hardware profile file with a provenance header (and the `measured:` tables when given)."""
    import yaml

    hw = cal.to_hardware(name, measured)
    header = (f"# Measured by `gpt-batchprof calibrate` on {cal.device_name}\n"
              f"# torch {cal.torch_version}, {cal.threads} threads, {cal.date}\n"
              "# peak_tflops: best dense matmul over a few square shapes (or the tables' best, when higher); bandwidth: large copy "
              "(read + write); launch_overhead_us: median of a tiny kernel.\n")
    if cal.link is not None:
        header += (f"# interconnect: all-reduce over {cal.link.ranks} processes ({cal.link.backend}), 4 KiB and up: "
                   "best bus bandwidth (algbw x 2(N-1)/N) and per-step latency from the smallest message.\n")
    if measured is not None:
        header += ("# measured: efficiency tables (achieved GFLOP/s or GB/s per shape, net of overhead_us per call;\n"
                   "# null = not measured); predictions interpolate them (see docs/bench.md).\n")
    return header + yaml.safe_dump(hardware_to_yaml_mapping(hw), sort_keys=False, default_flow_style=None, width=160)


# --------------------------------------------------------------------------- measuring


def _median_time(fn: Callable[[], object], device: str, budget_s: float, min_reps: int = 3,
                 max_reps: int = 200) -> float:
    """Seconds per call within a time budget, through the same timers `bench` uses: the best of
    the repeats' medians (``Measurement.best_s``), so a burst of load does not lower a ceiling."""
    from gpt_batchprof.measure.timing import CpuTimer, CudaTimer

    timer = (CudaTimer(min_reps=min_reps, max_reps=max_reps) if device == "cuda"
             else CpuTimer(min_reps=min_reps, max_reps=max_reps))
    return timer.measure(lambda i: fn(), warmup_s=budget_s / 4, rep_s=budget_s).best_s


def _matmul_fn(dtype: str, n: int, device: str):
    """A callable doing one n x n x n matmul in ``dtype`` (None when this device cannot)."""
    import torch

    if dtype in ("fp32", "tf32", "fp16", "bf16"):
        tdt = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        a = torch.randn(n, n, dtype=tdt, device=device)
        b = torch.randn(n, n, dtype=tdt, device=device)
        out = torch.empty(n, n, dtype=tdt, device=device)
        return lambda: torch.mm(a, b, out=out)
    if dtype == "fp8":
        a = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, n, device=device).to(torch.float8_e4m3fn).t()  # column-major
        one = torch.ones((), device=device)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    if dtype == "int8":
        a = torch.randint(-8, 8, (n, n), dtype=torch.int8, device=device)
        b = torch.randint(-8, 8, (n, n), dtype=torch.int8, device=device)
        return lambda: torch._int_mm(a, b)
    return None


def dtypes_to_try(device: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """(skipped dtype -> reason, dtypes to measure) for this device."""
    import torch

    if device == "cpu":
        return ({"fp8": "no native CPU fp8 matmul", "int8": "no native CPU int8 matmul in torch",
                 "tf32": "TF32 is a GPU tensor-core mode"}, ("fp32", "bf16", "fp16"))
    skipped: dict[str, str] = {}
    todo = ["fp32"]
    cap = torch.cuda.get_device_capability()
    if cap >= (8, 0):
        todo.append("tf32")
    else:
        skipped["tf32"] = "needs Ampere or newer"
    todo.append("fp16")
    if torch.cuda.is_bf16_supported():
        todo.append("bf16")
    else:
        skipped["bf16"] = "not supported by this GPU"
    if hasattr(torch, "_scaled_mm") and cap >= (8, 9):
        todo.append("fp8")
    else:
        skipped["fp8"] = "needs compute capability >= 8.9 and torch._scaled_mm"
    if hasattr(torch, "_int_mm"):
        todo.append("int8")
    else:
        skipped["int8"] = "torch._int_mm missing"
    return skipped, tuple(todo)


def measure_peak(dtype: str, device: str, sizes: tuple[int, ...], call_cap_s: float,
                 budget_s: float) -> tuple[float, int]:
    """Best FLOP/s over ``sizes`` (ascending); stops before a call would exceed ``call_cap_s``."""
    import torch

    best, best_n, rate = 0.0, 0, None
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32 if device == "cuda" else None
    try:
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        for n in sizes:
            flops = 2.0 * n**3
            if rate is not None and flops / rate > call_cap_s:
                break
            fn = _matmul_fn(dtype, n, device)
            t = _median_time(fn, device, budget_s)
            rate = flops / t
            if rate > best:
                best, best_n = rate, n
            del fn
    finally:
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    return best, best_n


def measure_bandwidth(device: str, nbytes: int, budget_s: float) -> float:
    """(bytes read + bytes written) / time of copying a ``nbytes`` buffer."""
    import torch

    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = _median_time(lambda: dst.copy_(src), device, budget_s)
    return 2.0 * src.numel() * 4 / t


def calibrate(device: str = "cpu", quick: bool = False, threads: int | None = None,
              progress: Callable[[str], None] | None = None) -> Calibration:
    """Measure this device. CPU: ~15 s (``quick``: ~3 s). CUDA: under a minute."""
    from gpt_batchprof.measure.device import device_name, physical_memory_bytes, require_torch
    from gpt_batchprof.measure.timing import measure_launch_overhead

    torch = require_torch()
    say = progress or (lambda s: None)
    old_threads = torch.get_num_threads()
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        if device == "cuda":
            sizes = (1024, 2048, 4096) if quick else (2048, 4096, 8192, 12288)
            call_cap, budget, copy_bytes = 0.05, (0.05 if quick else 0.2), (256 if quick else 1024) * 2**20
            props = torch.cuda.get_device_properties(0)
            memory = float(props.total_memory)
            l2 = float(getattr(props, "L2_cache_size", 0) or 0)
        else:
            sizes = (256, 512, 1024) if quick else (256, 512, 1024, 2048)
            call_cap, budget, copy_bytes = (0.05, 0.1, 64 * 2**20) if quick else (0.4, 0.6, 256 * 2**20)
            from gpt_batchprof.measure.device import last_level_cache_bytes

            memory = physical_memory_bytes()
            l2 = last_level_cache_bytes()[0]  # the CPU's last-level cache: bench rotates its inputs past it
        skipped, todo = dtypes_to_try(device)
        peaks: dict[str, float] = {}
        shapes: dict[str, int] = {}
        with torch.inference_mode():
            torch.manual_seed(0)
            for dt in todo:
                say(f"matmul {dt}")
                try:
                    rate, n = measure_peak(dt, device, sizes, call_cap, budget)
                except (RuntimeError, NotImplementedError, TypeError) as e:
                    skipped[dt] = str(e).splitlines()[0][:120]
                    continue
                if rate > 0:
                    peaks[dt], shapes[dt] = rate, n
            say("memory bandwidth")
            bw = measure_bandwidth(device, copy_bytes, budget)
            say("launch overhead")
            launch = measure_launch_overhead(device, budget)
        if not peaks:
            raise BatchprofError(f"calibrate: no matmul dtype could be measured on {device}")
        return Calibration(
            device=device, device_name=device_name(device), torch_version=torch.__version__,
            threads=torch.get_num_threads(), peak_flops_per_s=peaks, peak_shapes=shapes,
            memory_bandwidth_bytes_per_s=bw, launch_overhead_s=launch, memory_bytes=memory,
            l2_cache_bytes=l2, skipped=skipped,
            date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    finally:
        torch.set_num_threads(old_threads)


# --------------------------------------------------------------------------- cache for --hardware auto


def cache_dir() -> Path:
    import os

    base = os.environ.get("GPT_BATCHPROF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gpt-batchprof")
    return Path(base)


def calibrate_with_tables(device: str = "cpu", quick: bool = False, threads: int | None = None,
                          force: bool = False, grid=None, progress: Callable[[str], None] | None = None,
                          timer=None) -> tuple[Calibration, MeasuredTables]:
    """The ceilings and the efficiency tables (measure/tables.py), at one thread count.
    ``timer``: times the table cells (tests inject a FakeTimer; default: the device's)."""
    from gpt_batchprof.measure.device import require_torch
    from gpt_batchprof.measure.tables import default_grid, measure_tables

    torch = require_torch()
    cal = calibrate(device, quick=quick, threads=threads, progress=progress)
    old = torch.get_num_threads()
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        tables = measure_tables(device, grid or default_grid(device, quick), force=force, progress=progress,
                                timer=timer)
    finally:
        torch.set_num_threads(old)
    return cal, tables


def cached_hardware(device: str, threads: int | None = None, refresh: bool = False,
                    progress: Callable[[str], None] | None = None) -> HardwareSpec:
    """This device's calibrated profile, with its efficiency tables: from the cache (keyed by
    device name, torch version and thread count), else measured now (about 3 minutes) and cached."""
    from gpt_batchprof.measure.device import device_name, require_torch
    from gpt_batchprof.profiles import load_hardware

    torch = require_torch()
    old = torch.get_num_threads()
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        key = slug(f"{device_name(device)}-torch{torch.__version__}") + "-tables2"
    finally:
        torch.set_num_threads(old)
    path = cache_dir() / f"{key}.yaml"
    if path.is_file() and not refresh:
        from gpt_batchprof.errors import ProfileError

        try:
            return load_hardware(str(path))
        except ProfileError as e:
            raise ProfileError(f"{e} (the calibration cache; delete the file to calibrate again)") from None
    cal, tables = calibrate_with_tables(device, threads=threads, progress=progress)
    from gpt_batchprof.errors import BatchprofError
    from gpt_batchprof.files import write_atomic

    try:
        write_atomic(path, hardware_yaml(cal, f"calibrated-{key}", tables))
    except BatchprofError:  # an unwritable cache costs a re-calibration next time, nothing else
        return cal.to_hardware(f"calibrated-{key}", tables)
    return load_hardware(str(path))
