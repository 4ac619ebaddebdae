"""Which device to measure, what it is called, and which datasheet profile describes it."""

from __future__ import annotations

import os
import platform

from gpt_batchprof.errors import BatchprofError

DEVICES = ("auto", "cuda", "cpu")
TORCH_HINT = ("pip install torch==2.13.0 on CPU machines, the CUDA build where there is an NVIDIA GPU; "
              "`python scripts/ensure_torch.py` in the repository picks the right one")


def require_torch():
    """The torch module, or one clear line saying how to install it."""
    try:
        import torch
    except ModuleNotFoundError:
        raise BatchprofError(f"bench and calibrate need PyTorch, which is not installed ({TORCH_HINT})") from None
    return torch


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when CUDA is present, else 'cpu'; 'cuda' without CUDA is an error."""
    if device not in DEVICES:
        raise BatchprofError(f"--device: unknown value '{device}' (choose from {', '.join(DEVICES)})")
    torch = require_torch()
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise BatchprofError("--device cuda: no CUDA device is available to torch "
                             f"(torch {torch.__version__}); use --device cpu or --device auto")
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    return device


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: str) -> str:
    torch = require_torch()
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def torch_version() -> str:
    return require_torch().__version__


def physical_memory_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0.0


# --------------------------------------------------------------------------- what this CPU has free

DEFAULT_LLC_BYTES = 32 * 2**20  # assumed last-level cache when the OS does not say (a common server L3 slice)
_SYS_CPU = "/sys/devices/system/cpu"


def _size_bytes(text: str) -> float:
    """'32768K', '32 MiB', '1024' (bytes) -> bytes; 0 when unreadable."""
    import re

    m = re.match(r"\s*([0-9.]+)\s*([KMG]?)(i?B)?", text.strip(), re.I)
    if not m:
        return 0.0
    return float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2).upper()]


def _cpus_in_use() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def last_level_cache_bytes(root: str = _SYS_CPU) -> tuple[float, str]:
    """(bytes, where from) of the last-level cache that this process's CPUs share among them.

    From sysfs (``cpuN/cache/index*/``: the highest level of type Data or Unified; one
    instance per distinct ``shared_cpu_list`` among the CPUs this process may run on, so two
    L3 slices count twice), else ``lscpu -B``, else ``DEFAULT_LLC_BYTES`` (32 MiB).
    """
    best: dict[str, float] = {}  # shared_cpu_list -> size, for the highest level seen
    top = 0
    for cpu in _cpus_in_use():
        base = os.path.join(root, f"cpu{cpu}", "cache")
        try:
            entries = [e for e in os.listdir(base) if e.startswith("index")]
        except OSError:
            continue
        for e in entries:
            try:
                def read(name: str) -> str:
                    with open(os.path.join(base, e, name), encoding="utf-8") as fh:
                        return fh.read().strip()

                level, kind, size = int(read("level")), read("type"), _size_bytes(read("size"))
                shared = read("shared_cpu_list") if os.path.exists(os.path.join(base, e, "shared_cpu_list")) else str(cpu)
            except (OSError, ValueError):
                continue
            if kind not in ("Data", "Unified") or size <= 0 or level < top:
                continue
            if level > top:
                top, best = level, {}
            best[shared] = size
    if best:
        return float(sum(best.values())), f"sysfs: L{top}, {len(best)} instance(s)"
    try:
        import subprocess

        out = subprocess.run(["lscpu", "-B"], capture_output=True, text=True, timeout=5).stdout
        for name in ("L3 cache", "L2 cache"):
            for line in out.splitlines():
                if line.startswith(name + ":"):
                    size = _size_bytes(line.split(":", 1)[1])
                    if size > 0:
                        return size, f"lscpu: {name}"
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return float(DEFAULT_LLC_BYTES), "default (the OS did not say)"


def _cpu_times(path: str = "/proc/stat") -> dict[int, tuple[int, int]]:
    """cpu number -> (idle jiffies incl. iowait, total jiffies)."""
    out: dict[int, tuple[int, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            name, *vals = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            nums = [int(v) for v in vals[:8]]
            out[int(name[3:])] = (nums[3] + (nums[4] if len(nums) > 4 else 0), sum(nums))
    return out


def free_cores(window_s: float = 0.3, sample=None) -> tuple[int, str]:
    """(threads to use, why): the cores of this process's CPU set that are actually idle.

    The idle share of each allowed CPU over ``window_s`` (``/proc/stat``), summed and rounded
    (at least 1); without ``/proc/stat`` the CPU count minus the 1-minute load average.
    ``sample``: a stand-in for ``_cpu_times`` (tests).
    """
    import time

    cpus = _cpus_in_use()
    read = sample or _cpu_times
    try:
        a = read()
        time.sleep(window_s)
        b = read()
        idle = 0.0
        for c in cpus:
            if c in a and c in b and b[c][1] > a[c][1]:
                idle += (b[c][0] - a[c][0]) / (b[c][1] - a[c][1])
        n = max(1, min(len(cpus), int(idle + 0.5)))
        return n, f"{idle:.1f} of {len(cpus)} cores idle"
    except (OSError, ValueError, IndexError):
        pass
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return len(cpus), f"{len(cpus)} cores (load unknown)"
    n = max(1, min(len(cpus), int(len(cpus) - load + 0.5)))
    return n, f"{len(cpus)} cores, load average {load:.1f}"


def datasheet_hardware(device: str) -> str:
    """The built-in profile that best describes this device (for the default --hardware)."""
    if device != "cuda":
        return "cpu-generic"
    torch = require_torch()
    name = torch.cuda.get_device_name().upper()
    mem_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    # "NVIDIA H100 80GB HBM3" is the SXM part; PCIe cards say so in their name.
    table = [("H200", "h200"), ("H100 PCIE", "h100-pcie"), ("H100", "h100-sxm"), ("B200", "b200"),
             ("A10G", "a10g"), ("L4", "l4"), ("T4", "t4"), ("V100", "v100"), ("4090", "rtx-4090"),
             ("MI300X", "mi300x")]
    if "A100" in name:
        return "a100-80gb" if mem_gb > 50 else "a100-40gb"
    for key, profile in table:
        if key in name:
            return profile
    raise BatchprofError(f"no built-in profile matches GPU '{torch.cuda.get_device_name()}'; "
                         "pass --hardware NAME or --hardware auto (calibrate this device)")
