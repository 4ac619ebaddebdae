"""Several servers: an aggregated pool of replicas, or disaggregated prefill and decode.

Aggregated (``--replicas N``): N identical instances (each over ``tp x pp x ep`` GPUs), every
one running both phases; arrivals are dealt round-robin.

Disaggregated (``--disagg P:D``, as NVIDIA Dynamo, llm-d and SGLang deploy it, after
DistServe and Splitwise): P prefill instances and D decode instances, each over
``tp x pp x ep`` GPUs (``--prefill-tp`` / ``--decode-tp`` give each kind its own ``tp``).

1. Requests are dealt round-robin to the prefill instances, which batch prompts only
   (continuous batching, chunked as configured); a prompt's last chunk yields the first token.
2. Its KV cache (``prompt_len`` x the KV bytes per token of one GPU; each GPU sends its own
   shard over its own link, in parallel; with unequal layouts the side with the larger
   shard per GPU sets the pace) then crosses the link:
   ``bytes / bandwidth + latency``, the profile's interconnect or ``--kv-link``. Each prefill
   instance's link carries one transfer at a time, first come first served.
3. Once the KV has arrived, the request joins a decode instance (round-robin in order of
   arrival), which holds blocks for its prompt and produces tokens 2..G by continuous decode
   batching. A decode instance that must preempt recomputes the preempted request's prompt
   itself, as an aggregated server would.

TTFT counts the transfer (the first token reaches the user with the request's hand-over);
ITL is the decode instance's. A prefill instance frees a request's blocks when its prompt
is done (the transfer is taken to read them first). Goodput per GPU divides the pool's
goodput by all its GPUs: P and D instances times their GPUs each, or N x tp x pp x ep.

``simulate`` (here, above the one-server engine) runs one server or a pool; each instance of a
pool is one engine.py server. The pool's layout (``Disagg``) is configuration, in disagg.py.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import HardwareSpec, ModelSpec
from gpt_batchprof.simulate.engine import (
    ServerConfig, SimResult, check_lengths, kv_capacity, server_steps, simulate_server,
)
from gpt_batchprof.simulate.metrics import RequestRecord, Slo, summarise
from gpt_batchprof.simulate.steptime import StepModel
from gpt_batchprof.simulate.workload import Request, Workload


def _arrivals(workload: Workload) -> list[tuple]:
    """Every arrival of an open-loop workload, in order: (time, index, prompt, gen, prefix, tokens per key)."""
    if workload.concurrency is not None:
        raise BatchprofError("--replicas and --disagg take open-loop arrivals (--rate or a trace), not --concurrency")
    arr = workload.arrivals()
    out = []
    while arr.next_time() is not None:
        out.append(arr.pop())
    if not out:
        raise BatchprofError("no request arrived (is --duration shorter than the first arrival?)")
    return out


def _run(model, hw, items: list[tuple], cfg, slo, steps, gen_of=None):
    """One instance over ``items`` (as trace requests); its result and the global index of
    each of its local requests."""
    trace = tuple(Request(t, p, gen_of(g) if gen_of else g, pre, ptok) for t, _, p, g, pre, ptok in items)
    res = simulate_server(model, hw, Workload(trace=trace), cfg, slo, steps=steps)
    return res, [it[1] for it in items]


def simulate(model: ModelSpec, hw: HardwareSpec, workload: Workload, cfg: ServerConfig = ServerConfig(),
             slo: Slo = Slo(), on_request: Callable[[RequestRecord], None] | None = None,
             steps: StepModel | None = None) -> SimResult:
    """Run the workload through one server (engine.py), or the pool of ``cfg.replicas`` /
    ``cfg.disagg`` (below); ``on_request`` sees every request as it finishes."""
    if cfg.replicas > 1 or cfg.disagg is not None:
        return simulate_pool(model, hw, workload, cfg, slo, on_request, steps)
    return simulate_server(model, hw, workload, cfg, slo, on_request, steps)


def simulate_pool(model: ModelSpec, hw: HardwareSpec, workload: Workload, cfg: ServerConfig, slo: Slo = Slo(),
                  on_request: Callable[[RequestRecord], None] | None = None,
                  steps: StepModel | None = None) -> SimResult:
    check_lengths(model, workload)
    one = replace(cfg, replicas=1, disagg=None)
    if cfg.disagg is not None:
        pre_par, dec_par = cfg.disagg.layouts(cfg.parallel)
        pre_cfg = replace(one, role="prefill", parallel=pre_par)
        dec_cfg = replace(one, role="decode", prefix_caching=False, parallel=dec_par)
        one = pre_cfg
    if steps is None or steps.parallel != one.parallel:  # a search's step model is the --tp one
        steps = server_steps(model, hw, one)
    items = _arrivals(workload)
    records: dict[int, RequestRecord] = {}
    parts = []
    transfer_s = None
    if cfg.disagg is None:
        n = cfg.replicas
        for i in range(min(n, len(items))):
            res, index = _run(model, hw, items[i::n], one, slo, steps)
            parts.append(res)
            for r in res.records:
                records[index[r.index]] = replace(r, index=index[r.index])
        decode_parts, gpus = parts, n * cfg.parallel.world
    else:
        dg = cfg.disagg
        bw, lat = dg.link(hw)
        # each GPU sends (receives) its own shard over its own link: the side with fewer GPUs per
        # instance moves the larger shard and sets the pace
        for c in (pre_cfg, dec_cfg):
            c.parallel.check(model, hw)
        per_token = max(kv_capacity(model, hw, c, workload.longest).kv_bytes_per_token for c in (pre_cfg, dec_cfg))
        dec_steps = steps if dec_par == pre_par else server_steps(model, hw, dec_cfg)
        first: dict[int, RequestRecord] = {}
        ready: list[tuple] = []
        transfers = []
        for i in range(min(dg.prefill, len(items))):
            mine = items[i::dg.prefill]
            res, index = _run(model, hw, mine, pre_cfg, slo, steps, gen_of=lambda g: 1)
            parts.append(res)
            by_idx = {it[1]: it for it in mine}
            link_free = 0.0
            for r in sorted(res.records, key=lambda r: (r.first_token_s, r.index)):
                g_idx = index[r.index]
                t, _, p, g, pre, ptok = by_idx[g_idx]
                first[g_idx] = r
                if g <= 1:
                    records[g_idx] = replace(r, index=g_idx, gen_len=g)
                    continue
                dt = p * per_token / bw + lat
                start = max(r.first_token_s, link_free)
                link_free = start + dt
                transfers.append(link_free - r.first_token_s)
                ready.append((link_free, g_idx, p, g, pre, ptok))
        ready.sort()
        transfer_s = math.fsum(transfers) / len(transfers) if transfers else 0.0
        decode_parts = []
        for j in range(dg.decode):
            mine = ready[j::dg.decode]
            if not mine:
                continue
            res, index = _run(model, hw, mine, dec_cfg, slo, dec_steps)
            decode_parts.append(res)
            parts.append(res)
            for r in res.records:
                g_idx = index[r.index]
                f = first[g_idx]
                records[g_idx] = RequestRecord(g_idx, f.prompt_len, r.gen_len, f.arrival_s, f.start_s,
                                               r.arrival_s, r.finish_s, f.preemptions + r.preemptions)
        gpus = dg.gpus(cfg.parallel)
    recs = tuple(sorted(records.values(), key=lambda r: (r.arrival_s, r.index)))
    if on_request is not None:
        for r in recs:
            on_request(r)
    busy = math.fsum(p.busy_s for p in decode_parts) or math.nan
    kv_share = math.fsum(p.kv_share_s for p in decode_parts) / max(1, len(decode_parts))
    summary = summarise(recs, slo, math.fsum(p.seq_s for p in decode_parts) / busy, kv_share,
                        sum(p.summary.preemptions for p in parts))
    ref = decode_parts[0] if decode_parts else parts[0]
    return SimResult(workload, cfg, ref.capacity, ref.tokens_per_step, slo, recs, summary,
                     sum(p.steps for p in parts), False, sum(p.prefill_tokens for p in parts),
                     sum(p.prompt_tokens for p in parts), sum(p.prefix_hit_tokens for p in parts), gpus, transfer_s,
                     math.fsum(p.busy_s for p in parts), math.fsum(p.seq_s for p in parts), kv_share)
