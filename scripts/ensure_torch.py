#!/usr/bin/env python3
"""Make torch importable for the live commands without ever pulling CUDA wheels onto a CPU machine.

- torch already importable (a CUDA build included, e.g. via --system-site-packages): keep it.
- an NVIDIA GPU is present: install the default torch build (the CUDA one is wanted there).
- otherwise: install the pinned CPU build, torch==2.13.0 (a plain `torch` requirement would
  resolve to the newest build with gigabytes of CUDA packages).
Runs with the interpreter that should get torch: `.venv/bin/python scripts/ensure_torch.py`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

CPU_PIN = "torch==2.13.0"


def has_nvidia_gpu() -> bool:
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def main() -> int:
    if importlib.util.find_spec("torch") is not None:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            print(f"ensure_torch: keeping installed torch {out.stdout.strip()}")
            return 0
    requirement = "torch" if has_nvidia_gpu() else CPU_PIN
    print(f"ensure_torch: installing {requirement}", flush=True)
    rc = subprocess.call([sys.executable, "-m", "pip", "install", "-q", requirement])
    if rc != 0:
        print(f"ensure_torch: `pip install {requirement}` failed (exit {rc}); the analytic commands "
              "work without torch, the live ones (bench, calibrate, live sweeps) need it", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
