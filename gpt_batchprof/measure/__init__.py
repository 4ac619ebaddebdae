"""Live kernels: the only package that imports torch, and only inside functions.

timing.py   timers (CPU clock, CUDA events / graphs, a fake for tests) and Measurement
kernels.py  tensors + one-launch callables for every OpCost at its exact shape
bench.py    plan, time and collect rows next to the roofline prediction
calibrate.py measured peaks, bandwidth and launch overhead of this device
device.py   device choice, names, and the datasheet profile that matches a GPU
"""
