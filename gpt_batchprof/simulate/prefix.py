"""Prefix caching: KV blocks of prompt prefixes kept for later requests, LRU, inside the
paged KV budget (as vLLM's automatic prefix caching and SGLang's radix cache do).

A request's prompt begins with keys (Mooncake's ``hash_ids``, or one key per shared system
prompt); key ``j`` stands for tokens ``j*T .. (j+1)*T - 1`` of the prompt, ``T`` its
``prefix_tokens``, and is taken to identify those tokens and everything before them (as
block hashes chain in vLLM and Mooncake). Only whole KV blocks are cached: a key holds
``T // block_size`` blocks, ``(T // block_size) * block_size`` tokens. A request reuses the
leading keys found in the cache, up to leaving at least one prompt token to compute (the
one whose logits give the first token); it computes only the rest. When its prompt is done,
the keys it computed join the cache (its own blocks change hands, nothing is copied).

An entry in use by a running request is pinned; an unused one stays cached, counted as used
KV memory, and is evicted least recently used first whenever the server needs a free block
(before any running request is preempted).
"""

from __future__ import annotations

from collections import OrderedDict

from gpt_batchprof.errors import BatchprofError


class PrefixCache:
    """Entries keyed by (position, key); ``refs`` of each; unreferenced ones in LRU order."""

    def __init__(self, block_size: int):
        self.bs = block_size
        self.refs: dict[tuple[int, int], int] = {}
        self.blocks: dict[tuple[int, int], int] = {}
        self.lru: OrderedDict[tuple[int, int], int] = OrderedDict()  # unreferenced, oldest first
        self.evictable = 0  # blocks held by unreferenced entries
        self.prompt_tokens = 0  # prompt tokens admitted requests needed
        self.hit_tokens = 0  # of those, found in the cache

    def usable(self, prompt_len: int, prefix: tuple[int, ...], prefix_tokens: int) -> int:
        """Leading keys of a ``prompt_len``-token prompt that may be cached (whole blocks, one
        token left to compute)."""
        per_key = prefix_tokens // self.bs * self.bs
        if not prefix or per_key == 0:
            return 0
        if len(prefix) > 1 and prefix_tokens % self.bs:
            raise BatchprofError(f"prefix caching: keys of {prefix_tokens} tokens do not fall on --block-size "
                                 f"{self.bs} boundaries; use a block size that divides {prefix_tokens}")
        return min(len(prefix), (prompt_len - 1) // per_key)

    def lookup(self, prompt_len: int, prefix: tuple[int, ...], prefix_tokens: int) -> list[tuple[int, int]]:
        """The leading entries present, pinned (the caller unpins them if it cannot admit)."""
        hits = []
        for j in range(self.usable(prompt_len, prefix, prefix_tokens)):
            key = (j, prefix[j])
            if key not in self.refs:
                break
            self.pin(key)
            hits.append(key)
        return hits

    def pin(self, key: tuple[int, int]) -> None:
        if self.refs[key] == 0:
            del self.lru[key]
            self.evictable -= self.blocks[key]
        self.refs[key] += 1

    def unpin(self, key: tuple[int, int]) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.lru[key] = self.blocks[key]  # most recently used
            self.evictable += self.blocks[key]

    def insert(self, key: tuple[int, int], blocks: int) -> bool:
        """A computed prefix block set joins the cache, pinned by its request; False if an
        equal one is there already (computed by a request admitted at the same time)."""
        if key in self.refs:
            return False
        self.refs[key], self.blocks[key] = 1, blocks
        return True

    def evict(self, blocks: int) -> int:
        """Free at least ``blocks`` blocks from unreferenced entries, oldest first (fewer if
        there are not so many); returns the blocks freed."""
        freed = 0
        while freed < blocks and self.lru:
            key, b = self.lru.popitem(last=False)
            del self.refs[key], self.blocks[key]
            self.evictable -= b
            freed += b
        return freed

    @property
    def hit_rate(self) -> float:
        """Share of the admitted prompt tokens found in the cache."""
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
