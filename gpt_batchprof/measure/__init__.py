"""Live kernels: the only package that imports torch, and only inside functions.

timing.py   timers (CPU clock, CUDA events / graphs, a fake for tests) and Measurement
kernels.py  tensors + one-launch callables for every OpCost at its exact shape
bench.py    plan, time and collect rows next to the roofline prediction
calibrate.py measured peaks, bandwidth and launch overhead of this device
device.py   device choice, names, and the datasheet profile that matches a GPU
model.py    a reference GPT built from any ModelSpec (analyze's operators; imports torch at the top,
            so it is only imported from inside functions)
generate.py a real generation loop per batch next to analyze's serving prediction
hf.py       the same loop on the Hugging Face transformers model (optional extra 'hf')
"""
