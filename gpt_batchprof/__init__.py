"""gpt-batchprof: how batching changes latency and throughput of GPT inference, operator by operator."""

__version__ = "0.1.0"
