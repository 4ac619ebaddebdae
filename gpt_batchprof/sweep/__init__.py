"""Sweeps: a grid of (model, hardware, phase, batch, seq_len, operator, dtype, attention)
points, predicted by the roofline model and/or timed live, streamed to a file as they finish."""
