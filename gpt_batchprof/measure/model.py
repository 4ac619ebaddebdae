"""A compact reference GPT in torch, built from any ModelSpec (gpt-fast / nanoGPT style).

Everything `analyze` predicts runs here under the same operator names and shapes
(``gpt_batchprof.analytic.enumerate_ops``): ``norm``, one fused ``qkv_proj`` (or latent attention's
``mla_*`` projections, :class:`LatentAttention`), attention as
``attn_score`` -> ``attn_softmax`` -> ``attn_context`` (unfused) or one ``attn_fused`` (torch
SDPA), ``out_proj``, ``moe_router``, ``ffn_gate`` / ``ffn_up`` / ``ffn_down`` and the
``lm_head`` on the last position of each sequence. The KV cache is static and
preallocated for the whole generation; a step writes its new keys and values at
``pos .. pos + T`` and attends over the ``pos + T`` cached ones (exactly analyze's
``kv_len + q`` keys, so FLOPs agree operator by operator).

Weights are random (normal, std 0.02; no downloads) in one float dtype. This module
imports torch at the top: the rest of the package imports it only inside functions
(``measure/generate.py``), so ``gpt-batchprof analyze`` never loads torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gpt_batchprof.profiles import ModelSpec

ROPE_BASE = 10000.0
INIT_STD = 0.02


class KVCache(nn.Module):
    """Keys and values of every layer for ``batch`` sequences of up to ``max_len`` tokens.

    Preallocated once; ``length`` counts the tokens written so far (the cache "grows" by
    filling, never by reallocating, so CUDA graphs can keep pointers into it).
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int, dtype, device,
                 v_dim: int | None = None):
        super().__init__()
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)  # (nl, B, nkv, S, hs)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        # latent attention caches one latent per token in k, and no separate values (v_dim 0)
        v_shape = shape[:-1] + (head_dim if v_dim is None else v_dim,)
        self.register_buffer("v", torch.zeros(v_shape, dtype=dtype, device=device), persistent=False)
        self.length = 0
        self.max_len = max_len

    @property
    def nbytes(self) -> int:
        return (self.k.numel() + self.v.numel()) * self.k.element_size()


def _norm(spec: ModelSpec) -> nn.Module:
    # LayerNorm keeps weight and bias (2 x d_model), RMSNorm a weight only: as ModelSpec counts them.
    return nn.LayerNorm(spec.d_model) if spec.norm == "layernorm" else nn.RMSNorm(spec.d_model, eps=1e-5)


def rope_tables(max_len: int, head_dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, (max_len, head_dim), halves repeated (GPT-NeoX / Llama layout)."""
    inv = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_len, device=device, dtype=torch.float32), inv)  # (S, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (S, hs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, h, T, hs); cos, sin: (T, hs)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi head slopes 2^(-8 i / n) for i = 1..n (Press et al., for powers of two; used as is otherwise)."""
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / n_head) for i in range(n_head)])


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec, attention: str):
        super().__init__()
        self.nh, self.nkv, self.hs = spec.n_head, spec.n_kv_head, spec.head_dim
        self.q_dim, self.kv_dim = spec.q_dim, spec.kv_dim
        self.fused = attention == "fused"
        self.alibi = spec.positional == "alibi"
        self.window = spec.sliding_window
        self.chunk = spec.attention_chunk  # Llama 4: a query sees the keys of its own chunk only
        self.qkv_proj = nn.Linear(spec.d_model, spec.q_dim + 2 * spec.kv_dim, bias=spec.bias or spec.qkv_bias)
        # gpt-oss: a learned logit per query head that joins every softmax (a key with no value).
        # The unfused path adds it to the softmax; fused SDPA has no place for it and leaves it out
        # (it is no FLOP and one value per row: the timing is the same).
        self.sinks = nn.Parameter(torch.zeros(spec.n_head)) if spec.attention_sinks else None
        # qwen3, gemma3: each query and key head is RMS-normalised over head_dim before RoPE
        self.q_norm = nn.RMSNorm(self.hs, eps=1e-6) if spec.qk_norm else None
        self.k_norm = nn.RMSNorm(self.hs, eps=1e-6) if spec.qk_norm else None
        self.out_proj = nn.Linear(spec.q_dim, spec.d_model, bias=spec.bias)

    def forward(self, x, k_cache, v_cache, pos: int, rope, slopes):
        B, T, _ = x.shape
        nh, nkv, hs = self.nh, self.nkv, self.hs
        g = nh // nkv  # query heads per K/V head
        q, k, v = self.qkv_proj(x).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope[0][pos:pos + T], rope[1][pos:pos + T]  # (T, hs)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        end = pos + T
        k_cache[:, :, pos:end] = k
        v_cache[:, :, pos:end] = v
        # keys in view: every cached one, those within the window of the first query, or those of its chunk
        if self.chunk:
            start = pos - pos % self.chunk
        else:
            start = pos - min(pos, self.window - 1) if self.window else 0
        L = end - start
        keys, values = k_cache[:, :, start:end], v_cache[:, :, start:end]  # (B, nkv, L, hs)

        # query t (position pos + t) sees keys up to pos + t (and, with a window, newer than pos + t - window;
        # chunked, from the start of its own chunk)
        visible = None
        if T > 1 or (self.window and L > self.window):
            qpos = torch.arange(pos, end, device=x.device).view(T, 1)
            kpos = torch.arange(start, end, device=x.device).view(1, L)
            visible = kpos <= qpos
            if self.window:
                visible &= kpos > qpos - self.window
            if self.chunk:
                visible &= kpos >= qpos - qpos % self.chunk
        bias = None
        if self.alibi:  # -slope x distance to the key, (nh, T, L)
            qpos = torch.arange(pos, end, device=x.device).view(T, 1)
            dist = (qpos - torch.arange(start, end, device=x.device).view(1, L)).clamp(min=0)
            bias = (-slopes.view(nh, 1, 1) * dist).to(q.dtype)
        if self.fused:
            mask = None
            if bias is not None:
                mask = bias if visible is None else bias.masked_fill(~visible, float("-inf"))
            elif visible is not None and (pos or self.window or self.chunk):
                mask = visible
            y = F.scaled_dot_product_attention(  # attn_fused
                q, keys, values, attn_mask=mask, is_causal=mask is None and T > 1, enable_gqa=g > 1,
            )  # (B, nh, T, hs)
        else:
            qg = (q * (1.0 / math.sqrt(hs))).reshape(B, nkv, g * T, hs)  # (B, nkv, g*T, hs): g heads stacked
            scores = qg @ keys.transpose(-2, -1)  # attn_score: (B, nkv, g*T, L)
            if bias is not None or visible is not None:
                scores = scores.view(B, nkv, g, T, L)
                if bias is not None:
                    scores = scores + bias.view(nkv, g, T, L)
                if visible is not None:
                    scores = scores.masked_fill(~visible, float("-inf"))
                scores = scores.view(B, nkv, g * T, L)
            if self.sinks is not None:  # one more logit per row: head h = kv head h // g, query group h % g
                sink = self.sinks.to(scores.dtype).view(1, nkv, g, 1, 1).expand(B, nkv, g, T, 1).reshape(B, nkv, g * T, 1)
                probs = torch.softmax(torch.cat((scores, sink), dim=-1), dim=-1)[..., :-1]  # attn_softmax
            else:
                probs = torch.softmax(scores, dim=-1)  # attn_softmax
            y = (probs @ values).view(B, nh, T, hs)  # attn_context: (B, nkv, g*T, hs) -> (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.q_dim)  # (B, T, nh*hs)
        return self.out_proj(y)


class LatentAttention(nn.Module):
    """Multi-head latent attention (DeepSeek-V2/V3): the cache holds, per token, a latent of
    kv_lora_rank values and a rotary key of qk_rope_head_dim shared by all heads.

    Prefill (an empty cache, or several new tokens) runs the naive form: ``mla_kv_up`` decompresses
    every cached latent into per-head K (non-rotary part) and V, then ordinary attention over
    head_dim + rope. Decode runs the absorbed form: ``mla_q_absorb`` takes each head's query into the
    latent space with the K half of mla_kv_up's weight, all heads attend to the cached latents (an
    MQA of kv_lora_rank + rope wide heads; the latents are the values), and ``mla_v_absorb`` maps
    each head's latent output through the V half. analyze's ``--mla-form auto``.
    """

    def __init__(self, spec: ModelSpec, attention: str):
        super().__init__()
        d, self.nh = spec.d_model, spec.n_head
        self.nope, self.r, self.kvl, self.vd = spec.head_dim, spec.qk_rope_head_dim, spec.kv_lora_rank, spec.v_head_dim
        self.fused = attention == "fused"
        self.q_lora = spec.q_lora_rank
        if self.q_lora:
            self.mla_q_down = nn.Linear(d, self.q_lora, bias=False)
            self.q_norm = nn.RMSNorm(self.q_lora, eps=1e-6)
        self.mla_q_up = nn.Linear(self.q_lora or d, self.nh * (self.nope + self.r), bias=False)
        self.mla_kv_down = nn.Linear(d, self.kvl + self.r, bias=False)
        self.kv_norm = nn.RMSNorm(self.kvl, eps=1e-6)
        self.mla_kv_up = nn.Linear(self.kvl, self.nh * (self.nope + self.vd), bias=False)
        self.out_proj = nn.Linear(self.nh * self.vd, d, bias=False)

    def forward(self, x, k_cache, v_cache, pos: int, rope, slopes):
        B, T, _ = x.shape
        nh, nope, r, kvl, vd = self.nh, self.nope, self.r, self.kvl, self.vd
        q = self.mla_q_up(self.q_norm(self.mla_q_down(x)) if self.q_lora else x)  # (B, T, nh*(nope+r))
        q_nope, q_rope = q.view(B, T, nh, nope + r).transpose(1, 2).split([nope, r], dim=-1)  # (B, nh, T, .)
        c, k_rope = self.mla_kv_down(x).split([kvl, r], dim=-1)  # (B, T, kvl), (B, T, r)
        c = self.kv_norm(c)
        if rope is not None:
            cos, sin = rope[0][pos:pos + T], rope[1][pos:pos + T]  # (T, r)
            q_rope = apply_rope(q_rope, cos, sin)
            k_rope = apply_rope(k_rope.unsqueeze(1), cos, sin).squeeze(1)
        end = pos + T
        k_cache[:, 0, pos:end] = torch.cat((c, k_rope), dim=-1)
        cached = k_cache[:, 0, :end]  # (B, L, kvl + r)
        L = end
        visible = None
        if T > 1 and pos:  # chunked prefill: query t sees keys up to pos + t
            qpos = torch.arange(pos, end, device=x.device).view(T, 1)
            visible = torch.arange(0, end, device=x.device).view(1, L) <= qpos
        causal = T > 1 and not pos
        if T > 1 or not pos:  # naive: decompress K and V of every key in view
            kv = self.mla_kv_up(cached[..., :kvl]).view(B, L, nh, nope + vd).transpose(1, 2)  # (B, nh, L, .)
            k_nope, values = kv.split([nope, vd], dim=-1)
            keys = torch.cat((k_nope, cached[..., kvl:].unsqueeze(1).expand(B, nh, L, r)), dim=-1)  # (B, nh, L, nope+r)
            qf = torch.cat((q_nope, q_rope), dim=-1)  # (B, nh, T, nope+r)
            y = self._attend(qf, keys, values, visible, causal)  # (B, nh, T, vd)
        else:  # absorbed: attend in the latent space
            w_uk, w_uv = self.mla_kv_up.weight.view(nh, nope + vd, kvl).split([nope, vd], dim=1)
            q_lat = torch.einsum("bhtn,hnc->bhtc", q_nope, w_uk)  # mla_q_absorb: (B, nh, T, kvl)
            qf = torch.cat((q_lat, q_rope), dim=-1)  # (B, nh, T, kvl + r)
            y_lat = self._attend(qf, cached.unsqueeze(1), cached[..., :kvl].unsqueeze(1), visible, causal)  # (B, nh, T, kvl)
            y = torch.einsum("bhtc,hvc->bhtv", y_lat, w_uv)  # mla_v_absorb: (B, nh, T, vd)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, nh * vd))

    def _attend(self, q, k, v, visible, causal):
        """q: (B, nh, T, E); k: (B, nkv, L, E); v: (B, nkv, L, Ev), nkv = nh or 1 (all heads share it)."""
        B, nh, T, E = q.shape
        scale = 1.0 / math.sqrt(self.nope + self.r)
        if self.fused:
            return F.scaled_dot_product_attention(  # attn_fused
                q, k, v, attn_mask=visible, is_causal=causal, scale=scale, enable_gqa=k.shape[1] != nh)
        g = nh // k.shape[1]
        qg = (q * scale).reshape(B, k.shape[1], g * T, E)  # heads sharing one K stacked
        scores = qg @ k.transpose(-2, -1)  # attn_score: (B, nkv, g*T, L)
        if causal or visible is not None:
            L = k.shape[2]
            mask = visible if visible is not None else torch.ones(T, L, dtype=torch.bool, device=q.device).tril()
            scores = scores.view(B, k.shape[1], g, T, L).masked_fill(~mask, float("-inf")).view(B, k.shape[1], g * T, L)
        probs = torch.softmax(scores, dim=-1)  # attn_softmax
        return (probs @ v).view(B, nh, T, v.shape[-1])  # attn_context


class FeedForward(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        d, f = spec.d_model, spec.d_ff
        self.gated = spec.n_ffn_matrices == 3
        self.act = F.silu if spec.ffn == "swiglu" else (lambda t: F.gelu(t, approximate="tanh"))
        if self.gated:
            self.ffn_gate = nn.Linear(d, f, bias=spec.bias)
        self.ffn_up = nn.Linear(d, f, bias=spec.bias)
        self.ffn_down = nn.Linear(f, d, bias=spec.bias)

    def forward(self, x):  # (N, d) or (B, T, d)
        if self.gated:
            return self.ffn_down(self.act(self.ffn_gate(x)) * self.ffn_up(x))
        return self.ffn_down(F.gelu(self.ffn_up(x), approximate="tanh"))


class SharedExpert(nn.Module):
    """qwen2_moe's always-active gated FFN next to the routed experts, scaled by sigmoid(x . w).

    The gate is a dot product per token (d_model multiply-adds), written as one: analyze does
    not list it as a matmul (it is millions of times smaller than the experts), and neither
    does the FLOP counter for an elementwise product and a sum.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        d, f = spec.d_model, spec.d_ff_shared
        self.ffn_shared_gate = nn.Linear(d, f, bias=False)
        self.ffn_shared_up = nn.Linear(d, f, bias=False)
        self.ffn_shared_down = nn.Linear(f, d, bias=False)
        self.gate_weight = nn.Parameter(torch.empty(d)) if spec.shared_expert_gate else None  # DeepSeek: none

    def forward(self, x):  # (N, d)
        y = self.ffn_shared_down(F.silu(self.ffn_shared_gate(x)) * self.ffn_shared_up(x))
        if self.gate_weight is None:
            return y
        return y * torch.sigmoid((x * self.gate_weight).sum(-1, keepdim=True))


class MoE(nn.Module):
    """Top-k routing over ``n_expert`` FeedForwards; each expert runs on the tokens routed to it.

    FLOPs do not depend on the routing: every token goes to exactly ``n_expert_active``
    experts, so the expert matmuls see ``tokens x n_expert_active`` rows in total whichever
    experts they are (analyze's count). Which and how many distinct experts are touched
    (the weight bytes read) does depend on it; random weights route about uniformly, which
    is what analyze assumes. Per-expert token counts go to the host (``tolist``), so a step
    of an MoE model cannot be captured in a CUDA graph.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.top_k = spec.n_expert_active
        self.moe_router = nn.Linear(spec.d_model, spec.n_expert, bias=spec.router_bias)
        self.experts = nn.ModuleList(FeedForward(spec) for _ in range(spec.n_expert))
        self.shared = SharedExpert(spec) if spec.d_ff_shared else None

    def forward(self, x):
        B, T, d = x.shape
        xt = x.reshape(B * T, d)  # (N, d)
        logits = self.moe_router(xt)  # (N, E)
        weights, chosen = torch.topk(logits, self.top_k, dim=-1)  # (N, k)
        weights = torch.softmax(weights.float(), dim=-1).to(x.dtype)
        flat = chosen.reshape(-1)  # (N*k,) expert of each (token, slot)
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=len(self.experts)).tolist()
        out = torch.zeros_like(xt)
        start = 0
        for expert, n in zip(self.experts, counts):
            if n:
                slots = order[start:start + n]  # (n,) routed (token, slot) pairs
                tokens = slots // self.top_k
                y = expert(xt[tokens]) * weights.reshape(-1)[slots].unsqueeze(-1)  # (n, d)
                out.index_add_(0, tokens, y)
                start += n
        if self.shared is not None:
            out = out + self.shared(xt)
        return out.view(B, T, d)


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, attention: str):
        super().__init__()
        self.norm_attn, self.norm_ffn = _norm(spec), _norm(spec)
        # gemma 2/3: each sub-layer's output is normalised too, before the residual add
        self.post = spec.norms_per_layer == 4
        if self.post:
            self.norm_attn_out, self.norm_ffn_out = _norm(spec), _norm(spec)
        self.attn = LatentAttention(spec, attention) if spec.is_mla else Attention(spec, attention)
        self.ffn = MoE(spec) if spec.is_moe else FeedForward(spec)

    def forward(self, x, k_cache, v_cache, pos: int, rope, slopes):
        a = self.attn(self.norm_attn(x), k_cache, v_cache, pos, rope, slopes)
        x = x + (self.norm_attn_out(a) if self.post else a)
        f = self.ffn(self.norm_ffn(x))
        return x + (self.norm_ffn_out(f) if self.post else f)


class GPT(nn.Module):
    def __init__(self, spec: ModelSpec, attention: str = "unfused"):
        super().__init__()
        self.spec = spec
        self.tok_emb = nn.Embedding(spec.vocab_size, spec.d_model)
        self.pos_emb = nn.Embedding(spec.max_seq_len, spec.d_model) if spec.positional == "learned" else None
        # a stack of layer kinds: each layer built from its own kind (window, dense FFN or experts)
        self.layers = nn.ModuleList(Block(layer, attention) for layer in spec.layer_specs())
        self.norm_final = _norm(spec)
        self.lm_head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        if spec.tied_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.rope = None
        self.slopes = None

    def setup(self, max_len: int) -> None:
        """Position tables for sequences up to ``max_len`` (after the weights are on their device)."""
        dev = self.tok_emb.weight.device
        if self.spec.positional == "rope":
            dim = self.spec.qk_rope_head_dim if self.spec.is_mla else self.spec.head_dim  # MLA: rotary part only
            self.rope = rope_tables(max_len, dim, dev)
        elif self.spec.positional == "alibi":
            self.slopes = alibi_slopes(self.spec.n_head).to(dev)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        s, w = self.spec, self.tok_emb.weight
        if s.is_mla:  # one latent and rotary key per token and layer
            return KVCache(s.n_layer, batch, 1, max_len, s.kv_lora_rank + s.qk_rope_head_dim, w.dtype, w.device, v_dim=0)
        return KVCache(s.n_layer, batch, s.n_kv_head, max_len, s.head_dim, w.dtype, w.device)

    def forward(self, idx: torch.Tensor, cache: KVCache, pos: int) -> torch.Tensor:
        """idx: (B, T) token ids at positions pos .. pos + T - 1. Returns the last position's logits (B, V)."""
        B, T = idx.shape
        if pos + T > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} tokens; step needs {pos + T}")
        x = self.tok_emb(idx)  # (B, T, d)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(pos, pos + T, device=idx.device))
        for i, layer in enumerate(self.layers):
            x = layer(x, cache.k[i], cache.v[i], pos, self.rope, self.slopes)
        x = self.norm_final(x)  # (B, T, d)
        cache.length = pos + T
        return self.lm_head(x[:, -1, :])  # (B, V): generation needs the last position only


@torch.no_grad()
def init_random(model: GPT, seed: int = 0) -> None:
    """Normal(0, 0.02) weights, zero biases, unit norms; residual outputs scaled by 1/sqrt(2 n_layer) (GPT-2)."""
    gen = torch.Generator(device=model.tok_emb.weight.device).manual_seed(seed)
    scaled = INIT_STD / math.sqrt(2 * model.spec.n_layer)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            p.zero_()
        else:
            std = scaled if name.endswith(("out_proj.weight", "ffn_down.weight")) else INIT_STD
            p.normal_(0.0, std, generator=gen)


def build_model(spec: ModelSpec, dtype, device: str, attention: str = "unfused", max_len: int | None = None,
                seed: int = 0) -> GPT:
    """The reference GPT of ``spec`` with random weights in ``dtype`` on ``device`` (built without
    touching memory twice: modules are made on the meta device, then materialised in place)."""
    with torch.device("meta"):
        model = GPT(spec, attention).to(dtype)
    model = model.to_empty(device=device)
    if spec.tied_embeddings:  # to_empty re-creates parameters: tie them again
        model.lm_head.weight = model.tok_emb.weight
    init_random(model, seed)
    model.setup(max_len or spec.max_seq_len)
    return model.eval()
