"""Speculative decoding: a draft proposes ``k`` tokens, the target checks them in one forward.

Each of the ``k`` drafted tokens is accepted with probability ``a``, independently, until
the first rejection; the verify forward always yields one token of its own (the correction,
or the bonus token when all ``k`` pass). Tokens per verify step (Leviathan et al. 2023):

    E = 1 + a + a^2 + ... + a^k = (1 - a^(k+1)) / (1 - a)      (k + 1 when a = 1)

A speculative step of ``n`` sequences at ``kv`` cached tokens costs

- the verify: the target over ``k + 1`` new tokens per sequence on top of ``kv`` cached ones,
  priced as a decode step of ``n (k + 1)`` rows (batch expansion, as vLLM's first
  speculative decoding scored drafts): the dense layers and the LM head see ``n (k + 1)``
  tokens (every position's logits are checked), attention reads each sequence's cache once
  per drafted position (a multi-query kernel reads it once, so at long contexts this is an
  upper bound), plus
- ``k`` decode steps of the draft at batch ``n`` and ``kv`` cached tokens of its own cache.

The mean time per output token is that step over ``E``. At small batch the target's decode
step streams its weights whatever the batch, so verifying ``k + 1`` tokens costs about one
decode step and the speed-up approaches ``E / (1 + k x draft/target)``; as the batch grows
into the compute-bound region the verify costs ``k + 1`` times a decode step and the gain
shrinks, then turns into a loss.

The draft is a smaller model (``--draft gpt2`` beside a 7B target), or ``mtp``: multi-token-prediction
heads as DeepSeek-V3 ships them, priced as one transformer layer of the target plus its LM
head per drafted token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gpt_batchprof.analytic.gpt import Dtypes, enumerate_ops
from gpt_batchprof.analytic.roofline import step_time
from gpt_batchprof.analytic.serving import engine_step_s
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import HardwareSpec, ModelSpec

MTP = "mtp"


def tokens_per_step(k: int, a: float) -> float:
    """Expected tokens one verify step yields: (1 - a^(k+1)) / (1 - a)."""
    return float(k + 1) if a == 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


def mtp_draft(model: ModelSpec) -> ModelSpec:
    """Multi-token-prediction heads: one transformer layer of the target (and its LM head)."""
    return replace(model, name=f"{model.name}-mtp", n_layer=1)


@dataclass(frozen=True, slots=True)
class Speculation:
    k: int  # tokens the draft proposes per step
    acceptance: float  # probability that a drafted token is accepted
    draft: ModelSpec

    def __post_init__(self) -> None:
        if self.k < 1:
            raise BatchprofError(f"--speculate must be >= 1 drafted tokens, got {self.k}")
        if self.k > 64:
            raise BatchprofError(f"--speculate must be <= 64 drafted tokens, got {self.k}")
        if not (math.isfinite(self.acceptance) and 0.0 <= self.acceptance <= 1.0):
            raise BatchprofError(f"--acceptance must be between 0 and 1, got {self.acceptance:g}")

    @property
    def tokens_per_step(self) -> float:
        return tokens_per_step(self.k, self.acceptance)

    def to_dict(self) -> dict:
        return {"speculate_k": self.k, "acceptance": self.acceptance, "draft": self.draft.name,
                "tokens_per_step": self.tokens_per_step}


def verify_ops(model: ModelSpec, batch: int, k: int, kv_len: int, dtypes: Dtypes, attention: str):
    """The target's check of ``k + 1`` tokens per sequence at ``kv_len`` cached: a decode step
    of ``batch (k + 1)`` rows."""
    return enumerate_ops(model, "decode", batch * (k + 1), kv_len=kv_len, dtypes=dtypes, attention=attention)


@dataclass(frozen=True, slots=True)
class SpecStep:
    """One speculative step's parts (seconds) and what it yields."""

    verify_s: float
    draft_s: float  # all k draft decode steps
    tokens_per_step: float

    @property
    def step_s(self) -> float:
        return self.verify_s + self.draft_s

    @property
    def time_per_token_s(self) -> float:
        return self.step_s / self.tokens_per_step


def spec_step(model: ModelSpec, hw: HardwareSpec, spec: Speculation, batch: int, kv_len: int, dtypes: Dtypes,
              attention: str, launch: str) -> SpecStep:
    """A speculative step of ``batch`` sequences at ``kv_len`` cached tokens on one GPU; the
    verify and every draft step are forwards, each charged the serving engine's per-step
    overhead (:func:`engine_step_s`, over ``batch`` sequences) as a decode step is."""
    verify = (step_time(verify_ops(model, batch, spec.k, kv_len, dtypes, attention), hw, launch)
              + engine_step_s(model, hw, batch))
    draft = (step_time(enumerate_ops(spec.draft, "decode", batch, kv_len=kv_len, dtypes=dtypes,
                                     attention=attention), hw, launch)
             + engine_step_s(spec.draft, hw, batch))
    return SpecStep(verify, spec.k * draft, spec.tokens_per_step)


@dataclass(frozen=True, slots=True)
class SpecPoint:
    batch: int
    itl_s: float  # plain decoding, one step per token
    verify_s: float
    draft_s: float
    tokens_per_step: float
    spec_itl_s: float  # mean time per output token with speculation
    speedup: float  # itl_s / spec_itl_s
    tokens_per_s: float  # batch / spec_itl_s (decode only)


def speculative_points(model: ModelSpec, hw: HardwareSpec, spec: Speculation, batches: tuple[int, ...],
                       kv_len: int, dtypes: Dtypes, attention: str, launch: str) -> tuple[SpecPoint, ...]:
    """Plain vs speculative decoding per batch, at ``kv_len`` cached tokens (analyze's ITL context)."""
    out = []
    for b in batches:
        plain = step_time(enumerate_ops(model, "decode", b, kv_len=kv_len, dtypes=dtypes, attention=attention),
                          hw, launch) + engine_step_s(model, hw, b)
        s = spec_step(model, hw, spec, b, kv_len, dtypes, attention, launch)
        t = s.time_per_token_s
        out.append(SpecPoint(b, plain, s.verify_s, s.draft_s, s.tokens_per_step, t, plain / t, b / t))
    return tuple(out)


__all__ = ["MTP", "Speculation", "SpecPoint", "SpecStep", "mtp_draft", "spec_step",
           "speculative_points", "tokens_per_step", "verify_ops"]
