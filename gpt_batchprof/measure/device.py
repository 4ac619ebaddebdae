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
