#!/usr/bin/env python3
"""PyTorch peer for the training-speed comparison (bench/train_device_bench.sh): the same V3.2
architecture and shape as `dsa train` runs (a model config.json: MLA, MoE with sigmoid gate,
correction bias, group-limited top-k, shared expert, MTP depth 1, sequence-wise balance loss;
dense causal attention; the indexer is not trained in this mode), written the way a PyTorch user
would for speed: fp32 masters, bf16 autocast, MLA in its per-head (MHA) form through
scaled_dot_product_attention (flash), experts as a sorted grouped loop, full-vocabulary cross
entropy, fused AdamW. Not a numerical reference (tests/reference/train_ref.py is): no FP8.

  python3 bench/train_torch.py --config models/demo/config.json --batch 16 --seq-len 512 \
      --steps 30 --warmup 5 [--compile] --json out.json

Tokens are random (the speed does not depend on them). Prints and writes tokens/s (median over the
timed steps) and peak memory.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.w, self.eps = nn.Parameter(torch.ones(n)), eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.w).to(x.dtype)


def rope(x, cos, sin):
    """Interleaved pairs over the last dim; x [B, T, ..., rd], cos/sin [T, rd/2]."""
    shp = x.shape
    xr = x.float().reshape(*shp[:-1], shp[-1] // 2, 2)
    c = cos.view(1, shp[1], *([1] * (x.dim() - 3)), -1)
    s = sin.view(1, shp[1], *([1] * (x.dim() - 3)), -1)
    a, b = xr[..., 0], xr[..., 1]
    return torch.stack([a * c - b * s, a * s + b * c], -1).reshape(shp).to(x.dtype)


class MLA(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, self.nh = c['hidden_size'], c['num_attention_heads']
        self.nope, self.rd, self.vd, self.kvr = c['qk_nope_head_dim'], c['qk_rope_head_dim'], c['v_head_dim'], c['kv_lora_rank']
        eps = c.get('rms_norm_eps', 1e-6)
        self.q_a = nn.Linear(H, c['q_lora_rank'], bias=False)
        self.q_norm = RMSNorm(c['q_lora_rank'], eps)
        self.q_b = nn.Linear(c['q_lora_rank'], self.nh * (self.nope + self.rd), bias=False)
        self.kv_a = nn.Linear(H, self.kvr + self.rd, bias=False)
        self.kv_norm = RMSNorm(self.kvr, eps)
        self.kv_b = nn.Linear(self.kvr, self.nh * (self.nope + self.vd), bias=False)
        self.o = nn.Linear(self.nh * self.vd, H, bias=False)
        self.scale = (self.nope + self.rd) ** -0.5 * c.get('_mscale', 1.0) ** 2

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_b(self.q_norm(self.q_a(x))).view(B, T, self.nh, self.nope + self.rd)
        q = torch.cat([q[..., :self.nope], rope(q[..., self.nope:], cos, sin)], -1)
        kv = self.kv_a(x)
        lat, k_pe = self.kv_norm(kv[..., :self.kvr]), rope(kv[..., self.kvr:], cos, sin)
        kvb = self.kv_b(lat).view(B, T, self.nh, self.nope + self.vd)
        k = torch.cat([kvb[..., :self.nope], k_pe[:, :, None, :].expand(B, T, self.nh, self.rd)], -1)
        v = kvb[..., self.nope:]
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True, scale=self.scale)
        return self.o(o.transpose(1, 2).reshape(B, T, self.nh * self.vd))


class MLP(nn.Module):
    def __init__(self, H, inter):
        super().__init__()
        self.g, self.u, self.d = (nn.Linear(H, inter, bias=False), nn.Linear(H, inter, bias=False),
                                  nn.Linear(inter, H, bias=False))

    def forward(self, x):
        return self.d(F.silu(self.g(x)) * self.u(x))


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        H = c['hidden_size']
        self.E, self.k = c['n_routed_experts'], c['num_experts_per_tok']
        self.ng, self.tg, self.rs = c['n_group'], c['topk_group'], c['routed_scaling_factor']
        self.gate = nn.Parameter(torch.randn(self.E, H) * H ** -0.5)
        self.register_buffer('bias', torch.zeros(self.E))
        self.experts = nn.ModuleList([MLP(H, c['moe_intermediate_size']) for _ in range(self.E)])
        self.shared = MLP(H, c['moe_intermediate_size'] * c.get('n_shared_experts', 1))

    def forward(self, x):
        B, T, H = x.shape
        xf = x.reshape(-1, H)
        s = torch.sigmoid(xf.float() @ self.gate.float().t())
        with torch.no_grad():
            b = (s + self.bias).view(-1, self.ng, self.E // self.ng)
            keep = b.topk(2, -1).values.sum(-1).topk(self.tg, -1).indices
            gm = torch.ones_like(b[..., 0], dtype=torch.bool).scatter_(1, keep, False)
            idx = b.masked_fill(gm[..., None], float('-inf')).flatten(1).topk(self.k, -1).indices
        w = s.gather(1, idx)
        w = w / w.sum(-1, keepdim=True) * self.rs
        flat = idx.reshape(-1)
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=self.E).tolist()
        tok = order // self.k
        xs = xf[tok]
        outs, off = [], 0
        for e, n in enumerate(counts):
            if n:
                outs.append(self.experts[e](xs[off:off + n]))
            off += n
        ys = torch.cat(outs) * w.reshape(-1)[order][:, None].to(xs.dtype)
        y = torch.zeros_like(xf).index_add_(0, tok, ys)
        # sequence-wise balance statistics (DeepSeek-V3 eqs. 17-20)
        sn = (s / s.sum(-1, keepdim=True)).view(B, T, self.E).mean(1)
        f = torch.zeros(B, self.E, device=x.device).scatter_add_(
            1, idx.view(B, T * self.k), torch.ones(B, T * self.k, device=x.device)) * (self.E / (self.k * T))
        bal = (f * sn).sum(-1).mean()
        return (y + self.shared(xf)).view(B, T, H), bal


class Block(nn.Module):
    def __init__(self, c, moe):
        super().__init__()
        eps = c.get('rms_norm_eps', 1e-6)
        self.n1, self.attn, self.n2 = RMSNorm(c['hidden_size'], eps), MLA(c), RMSNorm(c['hidden_size'], eps)
        self.ffn = MoE(c) if moe else MLP(c['hidden_size'], c['intermediate_size'])
        self.moe = moe

    def forward(self, h, cos, sin):
        h = h + self.attn(self.n1(h), cos, sin)
        if self.moe:
            y, bal = self.ffn(self.n2(h))
        else:
            y, bal = self.ffn(self.n2(h)), h.new_zeros((), dtype=torch.float32)
        return h + y, bal


def yarn(c, T, device):
    rd, base = c['qk_rope_head_dim'], c.get('rope_theta', 10000.0)
    f = 1.0 / base ** (torch.arange(0, rd, 2, dtype=torch.float32) / rd)
    rs = c.get('rope_scaling') or {}
    m = 1.0
    if rs.get('type', rs.get('rope_type')) == 'yarn' and rs.get('factor', 1) > 1:
        fac, orig = rs['factor'], rs['original_max_position_embeddings']

        def cd(r):
            return rd * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(base))
        lo, hi = max(math.floor(cd(rs.get('beta_fast', 32))), 0), min(math.ceil(cd(rs.get('beta_slow', 1))), rd - 1)
        ramp = ((torch.arange(rd // 2, dtype=torch.float32) - lo) / max(hi - lo, 1e-3)).clamp(0, 1)
        f = f / fac * ramp + f * (1 - ramp)
        m = 0.1 * rs.get('mscale', 1.0) * math.log(fac) + 1.0
    th = torch.outer(torch.arange(T, dtype=torch.float32), f).to(device)
    return th.cos(), th.sin(), m


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, n = c['hidden_size'], c['num_hidden_layers']
        eps = c.get('rms_norm_eps', 1e-6)
        self.c = c
        self.embed = nn.Embedding(c['vocab_size'], H)
        self.layers = nn.ModuleList([Block(c, i >= c['first_k_dense_replace']) for i in range(n)])
        self.norm = RMSNorm(H, eps)
        self.head = nn.Linear(H, c['vocab_size'], bias=False)
        self.enorm, self.hnorm, self.mnorm = RMSNorm(H, eps), RMSNorm(H, eps), RMSNorm(H, eps)
        self.eh = nn.Linear(2 * H, H, bias=False)
        self.mtp = Block(c, True)

    def forward(self, x, y, lam, alpha, cos, sin):
        h = self.embed(x)
        bal = 0.0
        for l in self.layers:
            h, b = l(h, cos, sin)
            bal = bal + b
        hn = self.norm(h)
        loss = F.cross_entropy(self.head(hn).float().flatten(0, 1), y.flatten())
        T = x.shape[1]
        hm = self.eh(torch.cat([self.enorm(self.embed(x[:, 1:])), self.hnorm(hn[:, :T - 1])], -1))
        hm, b = self.mtp(hm, cos[:T - 1], sin[:T - 1])
        bal = bal + b
        lm = F.cross_entropy(self.head(self.mnorm(hm)).float().flatten(0, 1), y[:, 1:].flatten())
        return loss + lam * lm + alpha * bal


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--config', required=True)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--seq-len', type=int, default=512)
    ap.add_argument('--steps', type=int, default=30)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--compile', action='store_true')
    ap.add_argument('--json')
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--fp32', action='store_true', help='no bf16 autocast (CPU)')
    a = ap.parse_args()
    c = json.load(open(a.config))
    dev = a.device
    sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
    torch.manual_seed(0)
    cos, sin, m = yarn(c, a.seq_len, dev)
    c['_mscale'] = m
    model = Model(c).to(dev)
    nparam = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=dev == 'cuda')
    fwd = torch.compile(model) if a.compile else model
    B, T, V = a.batch, a.seq_len, c['vocab_size']
    times = []
    for step in range(a.warmup + a.steps):
        x = torch.randint(0, V, (B, T + 1), device=dev)
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=not a.fp32):
            loss = fwd(x[:, :-1], x[:, 1:], 0.3, 1e-4, cos, sin)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    res = {'mode': ('torch.compile' if a.compile else 'eager') + (' fp32' if a.fp32 else ' bf16 autocast'), 'device': dev,
           'threads': torch.get_num_threads(), 'torch': torch.__version__, 'params': nparam,
           'batch': B, 'seq_len': T, 'steps': a.steps, 'step_s_median': med, 'step_s_min': min(times),
           'tokens_per_s': B * T / med, 'peak_mem_gb': torch.cuda.max_memory_allocated() / 1e9 if dev == 'cuda' else None,
           'final_loss': float(loss.detach())}
    print(json.dumps(res))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(res, f, indent=1)


if __name__ == '__main__':
    main()
