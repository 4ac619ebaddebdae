"""The discrete-event simulation of one inference server.

Continuous batching (iteration-level, as vLLM / Orca / Sarathi): at every step finished
sequences leave and waiting ones join. A step first gives every decoding sequence one
token, then continues partly prefilled prompts, then admits waiting requests first come
first served, while the batch has fewer than ``max_batch`` sequences, the step fewer than
``max_tokens_per_step`` tokens, and the KV cache free blocks for the new tokens. With
chunked prefill a prompt may be split over steps; without it a prompt goes in whole or
waits. The KV cache is paged: ``block_size`` tokens per block, as many blocks as the
device memory left after the weights holds. A decoding sequence takes a new block when it
crosses a block boundary; new requests are admitted only while 1% of the blocks stay free
(vLLM's watermark, so that an admission does not at once preempt a running sequence); with
no block free for a growing sequence, the most recently admitted sequence is preempted
(its blocks freed; it goes back to the head of the queue and later recomputes its prompt
and the tokens it had produced, as vLLM's recompute preemption does).

Static batching: the server waits for ``max_batch`` requests or until the oldest has waited
``batch_timeout_s``, then runs that batch to its end: prompts padded to the longest, decode
steps until the longest generation is done; tokens stream out as produced, but a slot and
its KV blocks stay taken until the whole batch ends.

Speed: decode-only stretches (no prompt in flight, nobody to admit) advance step by step in
a tight loop keyed on a global step counter; each sequence's token count and cache length
are implicit in that counter, so a step costs O(1) whatever the batch; finishing and
block-boundary crossings are events in a heap.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from gpt_batchprof.analytic import Dtypes, Parallelism, Scenario, check_length, memory_use
from gpt_batchprof.analytic.speculative import Speculation
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import HardwareSpec, ModelSpec
from gpt_batchprof.simulate.metrics import RequestRecord, Slo, Summary, slo_percentiles, summarise
from gpt_batchprof.simulate.prefix import PrefixCache
from gpt_batchprof.simulate.steptime import StepModel
from gpt_batchprof.simulate.workload import Workload

if TYPE_CHECKING:
    from gpt_batchprof.simulate.disagg import Disagg

SCHEDULERS = ("continuous", "static")
ROLES = ("both", "prefill", "decode")  # what an instance does: all of a request, or one phase (--disagg)
WATERMARK = 0.01  # share of KV blocks an admission must leave free
DEFAULT_TOKENS_PER_STEP = 2048


@dataclass(frozen=True, slots=True)
class ServerConfig:
    scheduler: str = "continuous"
    max_batch: int = 256
    max_tokens_per_step: int | None = None  # default: 2048, or the longest prompt without chunking
    chunked_prefill: bool = True
    batch_timeout_s: float = 0.1
    block_size: int = 16
    dtypes: Dtypes = Dtypes()
    attention: str = "unfused"
    launch: str = "auto"  # per-kernel overhead: eager, graphs, or auto (graphs on a GPU), as in analyze
    parallel: Parallelism = Parallelism()  # the server is one model instance over tp x pp x ep GPUs
    prefix_caching: bool = False  # keep prompt-prefix KV blocks for later requests (LRU, see prefix.py)
    speculation: Speculation | None = None  # speculative decoding in decode-only steps
    replicas: int = 1  # identical servers sharing the arrivals round-robin (aggregated pool)
    disagg: "Disagg | None" = None  # prefill and decode on separate instances (see pools.py)
    role: str = "both"  # set by pools.py on each instance of a disaggregated pool

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise BatchprofError(f"--scheduler: unknown value '{self.scheduler}' (choose from {', '.join(SCHEDULERS)})")
        if self.max_batch < 1:
            raise BatchprofError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.max_tokens_per_step is not None and self.max_tokens_per_step < 1:
            raise BatchprofError(f"--max-tokens-per-step must be >= 1, got {self.max_tokens_per_step}")
        if self.block_size < 1:
            raise BatchprofError(f"--block-size must be >= 1, got {self.block_size}")
        if not (math.isfinite(self.batch_timeout_s) and self.batch_timeout_s >= 0):
            raise BatchprofError(f"--batch-timeout must be >= 0 seconds, got {self.batch_timeout_s}")
        if self.prefix_caching and self.scheduler != "continuous":
            raise BatchprofError("--prefix-caching needs --scheduler continuous (a static batch pads its prompts)")
        if self.replicas < 1:
            raise BatchprofError(f"--replicas must be >= 1, got {self.replicas}")
        if self.disagg is not None and self.replicas > 1:
            raise BatchprofError("give --disagg P:D or --replicas N, not both (--compare runs both at equal GPU count)")
        if self.disagg is not None and self.scheduler != "continuous":
            raise BatchprofError("--disagg needs --scheduler continuous")
        if self.role not in ROLES:
            raise BatchprofError(f"unknown role '{self.role}'")
        if self.speculation is not None and not self.parallel.is_single:
            raise BatchprofError("--speculate is modelled on one GPU; drop --tp/--pp/--ep")

    def tokens_per_step(self, longest_prompt: int) -> int:
        budget = self.max_tokens_per_step
        if budget is None:
            budget = DEFAULT_TOKENS_PER_STEP if self.chunked_prefill else max(DEFAULT_TOKENS_PER_STEP, longest_prompt)
        if self.scheduler == "continuous":
            if budget < self.max_batch:
                raise BatchprofError(f"--max-tokens-per-step ({budget}) must be at least --max-batch "
                                     f"({self.max_batch}): every running sequence decodes one token per step")
            if not self.chunked_prefill and budget < longest_prompt:
                raise BatchprofError(f"a {longest_prompt}-token prompt does not fit --max-tokens-per-step {budget} "
                                     "without --chunked-prefill; raise it or turn chunking on")
        return budget


@dataclass(frozen=True, slots=True)
class Capacity:
    kv_blocks: int  # in all: with --ep, the caches of all ep attention groups
    block_size: int
    weights_bytes: float  # on the fullest GPU
    kv_bytes_per_token: float  # on the fullest GPU


@dataclass(frozen=True, slots=True)
class SimResult:
    workload: Workload
    config: ServerConfig
    capacity: Capacity
    tokens_per_step: int
    slo: Slo
    records: tuple[RequestRecord, ...]  # in order of arrival
    summary: Summary
    steps: int
    interrupted: bool = False
    prefill_tokens: int = 0  # prompt tokens computed (recomputation after preemption included)
    prompt_tokens: int = 0  # prompt tokens the admitted requests needed (with --prefix-caching)
    prefix_hit_tokens: int = 0  # of those, found in the prefix cache
    gpus: int = 1  # all GPUs of the pool: instances x tp x pp x ep
    kv_transfer_s_mean: float | None = None  # disaggregated: mean KV transfer, prefill to decode instance
    busy_s: float = 0.0  # time the server ran steps (pools add these up)
    seq_s: float = 0.0  # integral of the batch size over busy time
    kv_share_s: float = 0.0  # integral of the share of KV blocks in use

    @property
    def latencies_at_slo_percentile(self) -> tuple[float, float]:
        """TTFT and ITL (seconds) at the SLO's percentile, over the finished requests."""
        return slo_percentiles(self.records, self.slo)

    @property
    def goodput_per_gpu_rps(self) -> float:
        return self.summary.goodput_rps / self.gpus

    @property
    def prefix_hit_rate(self) -> float | None:
        """Share of prompt tokens served from the prefix cache (None without prefix caching)."""
        if not self.config.prefix_caching:
            return None
        return self.prefix_hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def step_activation_reserve(model: ModelSpec, cfg: ServerConfig, longest_prompt: int, longest: int,
                            budget: int) -> float:
    """Device memory kept for the transient activations of the server's largest step, with
    analyze's model of them (``step_activation_bytes``, on the fullest GPU's slice of the model):
    the larger of the longest prompt's biggest prefill chunk (``min(budget, prompt)`` tokens over
    all the prompt's keys: its score matrix, unfused) and a full batch of decode tokens
    (``min(max_batch, budget)`` sequences at the longest cache). A step mixing both is counted as
    the larger of the two."""
    from gpt_batchprof.analytic.parallel import local_model
    from gpt_batchprof.analytic.serving import step_activation_bytes

    par = cfg.parallel
    loc = local_model(model, par)  # the model itself on one GPU
    chunk, seqs = min(budget, longest_prompt), min(cfg.max_batch, budget)
    return max(step_activation_bytes(loc, cfg.dtypes, cfg.attention, 1, chunk, longest_prompt),
               step_activation_bytes(loc, cfg.dtypes, cfg.attention, seqs, 1, max(1, longest - 1)))


def kv_capacity(model: ModelSpec, hw: HardwareSpec, cfg: ServerConfig, longest: int,
                longest_prompt: int | None = None) -> Capacity:
    """Blocks of KV cache in the device memory left after the weights and the activations of the
    largest step (:func:`step_activation_reserve`; analyze's memory model, as its max batch uses).

    Across several GPUs, those of the fullest GPU, from analyze's ``memory_use``: its sharded
    (and replicated) weights, and the KV bytes of its layers and K/V heads. With ``--ep`` each
    of the ``ep`` data-parallel attention groups holds a cache of its own.
    """
    par = cfg.parallel
    # analyze's memory of one sequence holding one cached token: the weights and the KV bytes per token
    unit = Scenario(prompt_len=1, gen_len=1, dtypes=cfg.dtypes, attention=cfg.attention)
    unit.check_fits_model(model)  # dtypes that do not apply to the model (--expert-dtype on a dense one)
    one = memory_use(model, unit, 1, par)
    weights, per_token = one.weights_bytes, one.kv_cache_bytes
    if cfg.speculation is not None:  # the draft sits beside the target: its weights, and a cache of its own
        d = memory_use(cfg.speculation.draft, Scenario(prompt_len=1, gen_len=1, dtypes=cfg.dtypes,
                                                       attention=cfg.attention), 1)
        weights, per_token = weights + d.weights_bytes, per_token + d.kv_cache_bytes
    where = hw.name if par.is_single else f"{hw.name} at {par.label()}"
    if weights >= hw.memory_bytes:
        hint = "" if par.is_single else " per GPU"
        raise BatchprofError(f"{model.name} does not fit {where}: its {cfg.dtypes.weight} weights take "
                             f"{weights / 1e9:.1f} GB{hint}, more than its {hw.memory_bytes / 1e9:.1f} GB of memory"
                             + ("; shard it with --tp/--pp" if par.is_single else ""))
    prompt = longest - 1 if longest_prompt is None else longest_prompt
    acts = step_activation_reserve(model, cfg, prompt, longest, cfg.tokens_per_step(prompt))
    if weights + acts >= hw.memory_bytes:
        fix = ("--attention fused, " if cfg.attention == "unfused" else "") + \
            ("a smaller --max-tokens-per-step or --max-batch" if cfg.chunked_prefill else "--chunked-prefill")
        raise BatchprofError(f"{model.name} on {where}: the activations of one step ({acts / 2**30:.1f} GiB for a "
                             f"{prompt}-token prompt) do not fit beside the {weights / 2**30:.1f} GiB of weights in "
                             f"{hw.memory_bytes / 2**30:.1f} GiB; try {fix}")
    blocks = int((hw.memory_bytes - weights - acts) // (cfg.block_size * per_token))
    need = -(-max(1, longest - 1) // cfg.block_size)
    if blocks < need:
        raise BatchprofError(f"{model.name} on {where}: the KV cache left after the weights holds {blocks} blocks "
                             f"of {cfg.block_size} tokens; one {longest}-token request needs {need}")
    return Capacity(blocks * par.ep, cfg.block_size, weights, per_token)


def server_steps(model: ModelSpec, hw: HardwareSpec, cfg: ServerConfig) -> StepModel:
    """The step-time model of the server ``cfg`` describes (shared by the runs of a sweep)."""
    return StepModel(model, hw, cfg.dtypes, cfg.attention, launch=cfg.launch, parallel=cfg.parallel,
                     speculation=cfg.speculation)


def check_lengths(model: ModelSpec, workload: Workload) -> None:
    # prompt + gen - 1 positions are ever embedded or cached
    check_length(model, workload.longest - 1, "the longest request's prompt + output - 1 (--prompt-len, "
                 "--gen-len or the trace)")


class _Seq:
    __slots__ = ("idx", "P", "G", "arrival", "start", "first", "target", "done", "g", "blocks", "epoch",
                 "d0", "g0", "base", "preempted", "prefix", "ptok", "shared", "held")

    def __init__(self, idx: int, arrival: float, P: int, G: int, prefix: tuple[int, ...] = (), ptok: int = 0):
        self.idx, self.arrival, self.P, self.G = idx, arrival, P, G
        self.prefix, self.ptok = prefix, ptok
        self.shared = 0  # of its blocks, those owned by the prefix cache
        self.held: list[tuple[int, int]] = []  # prefix-cache entries it pins
        self.start = self.first = math.nan
        self.target, self.done, self.g, self.blocks, self.epoch = P, 0, 0, 0, 0
        self.d0 = -1  # step counter at which it began decoding; -1 while not decoding
        self.g0 = self.base = 0
        self.preempted = 0


def simulate_server(model: ModelSpec, hw: HardwareSpec, workload: Workload, cfg: ServerConfig = ServerConfig(),
                    slo: Slo = Slo(), on_request: Callable[[RequestRecord], None] | None = None,
                    steps: StepModel | None = None) -> SimResult:
    """Run the workload through one server (``cfg.replicas`` and ``cfg.disagg`` are the pool's:
    pools.simulate runs them); ``on_request`` sees every request as it finishes."""
    check_lengths(model, workload)
    cfg.parallel.check(model, hw)  # analyze's check: a layout the model can be cut into, a link to price
    cap = kv_capacity(model, hw, cfg, workload.longest, workload.longest_prompt)
    budget = cfg.tokens_per_step(workload.longest_prompt)
    steps = steps or server_steps(model, hw, cfg)
    run = _Continuous if cfg.scheduler == "continuous" else _Static
    sim = run(workload, cfg, cap, budget, steps, on_request)
    interrupted = False
    try:
        sim.run()
    except KeyboardInterrupt:
        interrupted = True
        if not sim.records:
            raise
    records = tuple(sorted(sim.records, key=lambda r: (r.arrival_s, r.index)))
    if not records:
        raise BatchprofError("no request arrived (is --duration shorter than the first arrival?)")
    busy = sim.busy_s or math.nan
    summary = summarise(records, slo, sim.seq_s / busy, sim.kv_share_s, sim.preemptions)
    pc = sim.cache
    return SimResult(workload, cfg, cap, budget, slo, records, summary, sim.n_steps, interrupted, sim.prefill_tokens,
                     pc.prompt_tokens if pc else 0, pc.hit_tokens if pc else 0, cfg.parallel.world,
                     busy_s=sim.busy_s, seq_s=sim.seq_s, kv_share_s=sim.kv_share_s)


class _Server:
    def __init__(self, workload, cfg, cap, budget, steps, on_request):
        self.arrivals = workload.arrivals()
        self.cfg, self.cap, self.budget, self.steps, self.on_request = cfg, cap, budget, steps, on_request
        self.bs = cap.block_size
        self.free = cap.kv_blocks
        self.now = 0.0
        self.waiting: deque[_Seq] = deque()
        self.records: list[RequestRecord] = []
        self.busy_s = self.seq_s = self.kv_share_s = 0.0
        self.preemptions = self.n_steps = self.prefill_tokens = 0
        self.cache = PrefixCache(self.bs) if cfg.prefix_caching else None

    def pull_arrivals(self) -> None:
        nt = self.arrivals.next_time()
        while nt is not None and nt <= self.now:
            t, idx, *rest = self.arrivals.pop()
            self.waiting.append(_Seq(idx, t, *rest))
            nt = self.arrivals.next_time()

    def account(self, dt: float, n_seqs: int) -> None:
        self.busy_s += dt
        self.seq_s += n_seqs * dt
        self.kv_share_s += (self.cap.kv_blocks - self.free) / self.cap.kv_blocks * dt

    def finish(self, s: _Seq, t: float) -> None:
        rec = RequestRecord(s.idx, s.P, s.G, s.arrival, s.start, s.first, t, s.preempted)
        self.records.append(rec)
        self.arrivals.finished(t)
        if self.on_request is not None:
            self.on_request(rec)


class _Continuous(_Server):
    FINISH, BLOCK = 0, 1

    def __init__(self, *a):
        super().__init__(*a)
        self.running: dict[int, _Seq] = {}  # admission order
        self.prefilling: list[_Seq] = []
        self.events: list[tuple[int, int, int, int, _Seq]] = []  # (step counter, kind, idx, epoch, seq)
        self.D = 0  # steps run so far; the next step has index D
        self.n_dec = 0
        self.base_sum = 0  # sum over decoding sequences of (cache length - D)
        self.reserve = int(WATERMARK * self.cap.kv_blocks)
        self.prefilled = self.cfg.role == "decode"  # requests arrive with their prompt cached, first token out

    def admit_prefilled(self, s: _Seq) -> bool:
        """A decode instance takes a request whose prompt's KV came from a prefill instance:
        blocks for its P cached tokens, then it decodes from its second token on."""
        need = -(-s.P // self.bs)
        if need > self.available() - self.reserve:
            return False
        self.reclaim(need)
        self.free -= need
        s.blocks, s.done, s.g = need, s.P, 1
        self.running[s.idx] = s
        s.start = s.first = self.now
        if s.G <= 1:
            self.release(s)
            self.finish(s, self.now)
        else:
            self.join_decode(s, 1)
        return True

    # --- decoding sequences: token count and cache length are implicit in D -------------------
    def generated(self, s: _Seq) -> int:
        return s.g0 + self.D - s.d0 if s.d0 >= 0 else s.g

    def join_decode(self, s: _Seq, g: int) -> None:
        """``s`` has ``g`` tokens out and P + g - 1 cached; from step D on it decodes."""
        s.d0, s.g0 = self.D, g
        s.base = s.P + g - 1 - self.D
        self.n_dec += 1
        self.base_sum += s.base
        # the step with counter D' yields token g + D' - D + 1; the last token is G
        heapq.heappush(self.events, (self.D + s.G - g, self.FINISH, s.idx, s.epoch, s))
        self.push_block_event(s)

    def push_block_event(self, s: _Seq) -> None:
        # step D' writes cache entry P + g(D'); it needs a new block once that exceeds blocks x bs
        d_need = s.d0 + s.blocks * self.bs - s.P - s.g0 + 1
        if d_need < s.d0 + s.G - s.g0:  # before its last step
            heapq.heappush(self.events, (max(d_need, self.D), self.BLOCK, s.idx, s.epoch, s))

    def leave_decode(self, s: _Seq) -> None:
        s.g = self.generated(s)
        s.d0 = -1
        s.epoch += 1
        self.n_dec -= 1
        self.base_sum -= s.base

    def release(self, s: _Seq) -> None:
        self.free += s.blocks - s.shared
        if s.held:
            for key in s.held:
                self.cache.unpin(key)
            s.held, s.shared = [], 0
        s.blocks = 0
        del self.running[s.idx]

    # --- prefix cache ------------------------------------------------------------------------
    def available(self) -> int:
        """Blocks free now or freed by evicting unused prefix-cache entries."""
        return self.free + (self.cache.evictable if self.cache else 0)

    def reclaim(self, blocks: int) -> None:
        """Evict unused cache entries until ``blocks`` blocks are free (or none is left)."""
        if self.cache is not None and self.free < blocks:
            self.free += self.cache.evict(blocks - self.free)

    def reuse_prefix(self, s: _Seq) -> None:
        """``s`` (about to be admitted) takes the cached leading blocks of its prompt."""
        hits = self.cache.lookup(s.P, s.prefix, s.ptok)
        if hits:
            s.held = hits
            s.shared = s.blocks = sum(self.cache.blocks[k] for k in hits)
            s.done = s.shared * self.bs

    def drop_prefix(self, s: _Seq) -> None:
        """Undo :meth:`reuse_prefix` for a request that could not be admitted after all."""
        for key in s.held:
            self.cache.unpin(key)
        s.held, s.shared, s.blocks, s.done = [], 0, 0, 0

    def share_prefix(self, s: _Seq) -> None:
        """``s`` has computed its prompt: the prefix blocks it computed join the cache."""
        c = self.cache
        per_key = s.ptok // self.bs
        for j in range(len(s.held), c.usable(s.P, s.prefix, s.ptok)):
            key = (j, s.prefix[j])
            if not c.insert(key, per_key):
                break
            s.held.append(key)
            s.shared += per_key

    def preempt(self, victim: _Seq) -> None:
        if victim.d0 >= 0:
            self.leave_decode(victim)
        else:
            self.prefilling.remove(victim)
        self.release(victim)
        victim.target, victim.done = victim.P + victim.g, 0
        victim.preempted += 1
        self.preemptions += 1
        self.waiting.appendleft(victim)

    def take_block(self, s: _Seq) -> bool:
        """One more block for ``s``, preempting the youngest sequences if need be; False if
        ``s`` itself was preempted."""
        self.reclaim(1)
        while self.free == 0:
            victim = self.running[next(reversed(self.running))]
            self.preempt(victim)
            if victim is s:
                return False
        self.free -= 1
        s.blocks += 1
        return True

    def handle_events(self) -> None:
        ev = self.events
        while ev and ev[0][0] <= self.D:
            _, kind, _, epoch, s = heapq.heappop(ev)
            if epoch != s.epoch:
                continue
            if kind == self.FINISH:
                self.leave_decode(s)
                self.release(s)
                self.finish(s, self.now)
            elif self.take_block(s):
                self.push_block_event(s)

    # --- planning one step ---------------------------------------------------------------
    def chunk_for(self, s: _Seq, room: int, reserve: int = 0) -> int:
        """Prefill tokens ``s`` gets this step (0: none), taking the blocks they need and
        leaving ``reserve`` blocks free."""
        c = min(s.target - s.done, room)
        if not self.cfg.chunked_prefill and c < s.target - s.done:
            if room < self.budget or self.n_dec:
                return 0
            c = s.target - s.done  # a recomputed prompt longer than a step goes alone
        fit = (s.blocks + self.available() - reserve) * self.bs - s.done
        if c > fit:
            if not self.cfg.chunked_prefill:
                return 0
            c = fit
        if c <= 0:
            return 0
        need = -(-(s.done + c) // self.bs) - s.blocks
        self.reclaim(need)
        self.free -= need
        s.blocks += need
        return c

    def run(self) -> None:
        while True:
            self.pull_arrivals()
            self.handle_events()
            self.pull_arrivals()
            if not self.running and not self.waiting:
                nt = self.arrivals.next_time()
                if nt is None:
                    return
                self.now = max(self.now, nt)
                continue
            room = self.budget - self.n_dec
            chunks: list[tuple[_Seq, int]] = []
            for s in self.prefilling:
                if room <= 0:
                    break
                c = self.chunk_for(s, room)
                if c:
                    chunks.append((s, c))
                    room -= c
            while self.waiting and room > 0 and len(self.running) < self.cfg.max_batch:
                s = self.waiting[0]
                if self.prefilled and not s.preempted:
                    if not self.admit_prefilled(s):
                        break
                    self.waiting.popleft()
                    room -= 1
                    continue
                if self.cache is not None and s.prefix and not s.held:
                    self.reuse_prefix(s)
                c = self.chunk_for(s, room, self.reserve)
                if not c:
                    if s.held:
                        self.drop_prefix(s)
                    break
                if self.cache is not None:
                    self.cache.prompt_tokens += s.target
                    self.cache.hit_tokens += s.done
                self.waiting.popleft()
                self.running[s.idx] = s
                self.prefilling.append(s)
                if math.isnan(s.start):
                    s.start = self.now
                chunks.append((s, c))
                room -= c
            if chunks:
                self.mixed_step(chunks)
            elif self.n_dec:
                self.decode_stretch()
            else:  # prompts in flight hold the whole cache: free room for the oldest
                self.preempt(self.running[next(reversed(self.running))])

    def mixed_step(self, chunks: list[tuple[_Seq, int]]) -> None:
        n = self.n_dec
        kv = (self.base_sum + n * self.D + n // 2) // n if n else 0
        completing = [s for s, c in chunks if s.done + c == s.target]
        dt = self.steps.mixed_step_s(n, kv, [(c, s.done) for s, c in chunks], n + len(completing))
        self.now += dt
        self.account(dt, n + len(chunks))
        self.D += 1
        self.n_steps += 1
        for s, c in chunks:
            s.done += c
            self.prefill_tokens += c
        for s in completing:
            self.prefilling.remove(s)
            if self.cache is not None and s.prefix:
                self.share_prefix(s)
            s.g += 1
            if math.isnan(s.first):
                s.first = self.now
            if s.g >= s.G:
                self.release(s)
                self.finish(s, self.now)
            else:
                self.join_decode(s, s.g)

    def decode_stretch(self) -> None:
        """Decode steps until something changes the batch: a finish, a block that has to be
        found by preempting, or an arrival that could join (nobody waiting, a free slot).
        Block-boundary crossings with free blocks are served on the way."""
        n = self.n_dec
        cut = math.inf
        if not self.waiting and len(self.running) < self.cfg.max_batch:
            nt = self.arrivals.next_time()
            cut = math.inf if nt is None else nt
        kv = (self.base_sum + n * self.D + n // 2) // n
        step, ev, total = self.steps.decode_step_s, self.events, self.cap.kv_blocks
        t0, now, kv_s, d_start = self.now, self.now, 0.0, self.D
        while True:
            dt = step(n, kv)
            now += dt
            kv_s += (total - self.free) * dt
            kv += 1
            self.D += 1
            if now >= cut:
                break
            while ev and ev[0][0] <= self.D:  # events due before the next step
                _, kind, _, epoch, s = ev[0]
                if epoch != s.epoch:
                    heapq.heappop(ev)
                elif kind == self.BLOCK and self.free:
                    heapq.heappop(ev)
                    self.free -= 1
                    s.blocks += 1
                    self.push_block_event(s)
                else:
                    break
            else:
                continue
            break
        self.n_steps += self.D - d_start
        self.busy_s += now - t0
        self.seq_s += n * (now - t0)
        self.kv_share_s += kv_s / total
        self.now = now


class _Static(_Server):
    def run(self) -> None:
        timeout, B, bs = self.cfg.batch_timeout_s, self.cfg.max_batch, self.bs
        while True:
            self.pull_arrivals()
            if not self.waiting:
                nt = self.arrivals.next_time()
                if nt is None:
                    return
                self.now = max(self.now, nt)
                continue
            if len(self.waiting) < B:
                # wait for a full batch or the oldest request's timeout, whichever is first
                deadline = self.waiting[0].arrival + timeout
                while len(self.waiting) < B:
                    nt = self.arrivals.next_time()
                    if nt is None or nt > deadline:
                        self.now = max(self.now, deadline)
                        break
                    self.now = max(self.now, nt)
                    self.pull_arrivals()
            batch: list[_Seq] = []
            p_max = g_max = 0
            for s in self.waiting:
                if len(batch) == B:
                    break
                p, g = max(p_max, s.P), max(g_max, s.G)
                if (len(batch) + 1) * -(-(p + g - 1) // bs) > self.cap.kv_blocks:
                    break
                batch.append(s)
                p_max, g_max = p, g
            for _ in batch:
                self.waiting.popleft()
            self.run_batch(batch, p_max, g_max)

    def run_batch(self, batch: list[_Seq], p_max: int, g_max: int) -> None:
        b = len(batch)
        self.free = self.cap.kv_blocks - b * -(-(p_max + g_max - 1) // self.bs)
        t0 = self.now
        for s in batch:
            s.start = t0
        self.now += self.steps.mixed_step_s(0, 0, [(p_max, 0)] * b, b)
        self.prefill_tokens += b * p_max
        times = [self.now]  # times[i]: when token i + 1 is out
        step = self.steps.decode_step_s
        for kv in range(p_max, p_max + g_max - 1):
            self.now += step(b, kv)
            times.append(self.now)
        self.n_steps += g_max
        self.account(self.now - t0, b)
        for s in batch:
            s.first = times[0]
            self.finish(s, times[s.G - 1])
        self.free = self.cap.kv_blocks
