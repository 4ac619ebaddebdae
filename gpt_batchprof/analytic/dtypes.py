"""Storage dtypes of one analysis: weights, activations, KV cache. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import ACT_DTYPES, KV_DTYPES, WEIGHT_DTYPES, store_bytes, unquantised_dtype


@dataclass(frozen=True, slots=True)
class Dtypes:
    """Storage dtypes of weights, activations and KV cache. Matmuls run at the activation dtype."""

    weight: str = "fp16"
    act: str = "fp16"
    kv: str = "fp16"
    expert: str | None = None  # routed experts' weights, when stored apart (gpt-oss: mxfp4); None: ``weight``

    def __post_init__(self) -> None:
        for what, value, allowed in (
            ("activation", self.act, ACT_DTYPES),
            ("weight", self.weight, WEIGHT_DTYPES),
            ("kv", self.kv, KV_DTYPES),
            ("expert", self.expert_weight, WEIGHT_DTYPES),
        ):
            if value not in allowed:
                raise BatchprofError(f"unknown {what} dtype '{value}' (choose from {', '.join(allowed)})")

    @property
    def unquantised(self) -> str:
        """Dtype of the weights a quantised checkpoint leaves alone (embeddings, LM head,
        norms, routers): the activation dtype when ``weight`` is quantised, else ``weight``."""
        return unquantised_dtype(self.weight, self.act)

    @property
    def store_bytes(self) -> dict[str, float]:
        """Bytes per weight of each store (matrix, expert, other): ``profiles.store_bytes``."""
        return store_bytes(self.weight, self.act, self.expert)

    @property
    def expert_weight(self) -> str:
        """Dtype of the routed experts' weight matrices."""
        return self.expert or self.weight

    @classmethod
    def of(cls, dtype: str, weight: str | None = None, kv: str | None = None, expert: str | None = None) -> "Dtypes":
        """``--dtype`` for everything, with ``--weight-dtype`` / ``--kv-dtype`` / ``--expert-dtype`` overrides."""
        return cls(weight=weight or dtype, act=dtype, kv=kv or dtype, expert=expert)

    @classmethod
    def for_model(cls, model, dtype: str, weight: str | None = None, kv: str | None = None,
                  expert: str | None = None) -> "Dtypes":
        """As :meth:`of`, with the weights stored as ``model``'s checkpoint stores them unless told
        otherwise: ``checkpoint_dtype`` for the linear layers (DeepSeek-V3: fp8) and, when
        ``--weight-dtype`` is not given either, ``checkpoint_expert_dtype`` for the routed experts
        (gpt-oss: mxfp4). An explicit ``--weight-dtype`` prices every weight matrix in that format."""
        if expert is None and weight is None:
            expert = model.checkpoint_expert_dtype
        return cls.of(dtype, weight or model.checkpoint_dtype, kv, expert)

    def as_checkpoint(self, model) -> bool:
        """Whether ``model``'s checkpoint states a weight format and this analysis prices its weights in it."""
        stated = [(model.checkpoint_dtype, self.weight), (model.checkpoint_expert_dtype, self.expert_weight)]
        return any(c for c, _ in stated) and all(c is None or c == d for c, d in stated)
