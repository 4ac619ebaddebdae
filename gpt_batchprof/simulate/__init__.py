"""`simulate`: a discrete-event simulation of one inference server under load.

Pure Python on top of the analytic model (imports only ``gpt_batchprof.analytic`` and
``gpt_batchprof.profiles``): workloads, continuous and static batching, a paged KV cache,
latency percentiles, SLOs and goodput, load sweeps and the search for the highest rate
that meets an SLO.
"""

from gpt_batchprof.simulate.disagg import Disagg, parse_disagg
from gpt_batchprof.simulate.engine import SCHEDULERS, Capacity, ServerConfig, SimResult
from gpt_batchprof.simulate.metrics import REQUEST_COLUMNS, RequestRecord, Slo, Summary
from gpt_batchprof.simulate.pools import simulate
from gpt_batchprof.simulate.search import LoadPoint, RateSearch, find_max_rate, sweep_rates
from gpt_batchprof.simulate.steptime import StepModel
from gpt_batchprof.simulate.traces import Trace, load_trace, read_trace
from gpt_batchprof.simulate.workload import Lengths, Request, Workload, parse_duration, parse_lengths

__all__ = [
    "SCHEDULERS", "Capacity", "Disagg", "ServerConfig", "SimResult", "simulate", "parse_disagg", "REQUEST_COLUMNS",
    "RequestRecord", "Slo", "Summary", "LoadPoint", "RateSearch", "find_max_rate", "sweep_rates", "StepModel", "Lengths",
    "Request", "Workload", "parse_duration", "parse_lengths", "read_trace", "load_trace", "Trace",
]
