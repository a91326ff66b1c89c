#!/usr/bin/env python3
"""Independent PyTorch training reference for dsa (docs/training.md is the contract).

Written from docs/training.md and ../../../shared/spec/dsa-v32.md, not from the C++ trainer.
Float64 autograd over the V3.2 training forward: every rounding point of the engine's absorbed
path (bf16 outputs, act_quant FP8 round trips, the weights rounded from their fp32 masters) is a
straight-through estimator `x + (round(x) - x).detach()`, so the forward values are the engine's
(up to fp64-vs-fp32 evaluation: a rare last-bit flip at a rounding point) and the gradient is
that of the exact formula at the rounded values (docs/training.md §3). Decisions (expert choices,
the indexer's top-k sets in sparse mode) are computed here in the engine's fp32 semantics and
written to the fixture, so that the C++ side can replay them (keep routing).

  python3 tests/reference/train_ref.py --model /tmp/micro --out tests/fixtures/train_grads.safetensors

Writes: the batch, per case (dense: every parameter's gradient; sparse: the attention's and the
embedding's) the losses, the per-target log-probs, the decisions and the gradients, and for the
dense case the losses of a few AdamW steps (with the balance-bias rule) and the final biases.
Gradients are stored as F16 of g * 2^e with a per-tensor exponent e (`gexp.*`, I32) chosen so that
the largest |g| maps into [2^14, 2^15): 11 significant bits, far below the test's bounds.
"""

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsa_ref as R  # noqa: E402
from make_goldens import checkpoint_digest, save_safetensors  # noqa: E402

F64 = torch.float64
F32 = torch.float32
BF16 = torch.bfloat16
I32 = torch.int32


# ------------------------------------------------------------------------------------------
# Straight-through rounding points
# ------------------------------------------------------------------------------------------

def ste(x, value):
    """Forward: value (the rounded one); backward: identity."""
    return x + (value.to(F64) - x).detach()


def bf(x):
    """bf16 output of an fp32 computation (the engine rounds its fp32 result to bf16)."""
    return ste(x, x.detach().to(F32).to(BF16))


def aq(x):
    """act_quant round trip (ue8m0 per-row, per-128-column scales; clamp included), STE."""
    y, s = R.act_quant(x.detach().to(F32))
    return ste(x, R.dequant_act(y, s).to(F64))


def quant_fp8_weight(w):
    """docs/training.md §1 weight quantiser on an fp32 master [R, C]: per 128x128 block
    s = fp32(max(amax, 1e-12) / 448), q = e4m3_rne(clamp(w / s, -448, 448)). Returns (q, s)."""
    rows, cols = w.shape
    nr, nc = (rows + 127) // 128, (cols + 127) // 128
    q = torch.empty_like(w)
    s = torch.empty(nr, nc, dtype=F32)
    for i in range(nr):
        for j in range(nc):
            blk = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
            amax = blk.abs().max().clamp(min=1e-12)
            sc = amax / torch.tensor(448.0, dtype=F32)  # fp32 division
            q[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = R.fp8_round((blk / sc).clamp(-448, 448))
            s[i, j] = sc
    return q, s


def block_scale(s, shape):
    rows, cols = shape
    return s.repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]


# ------------------------------------------------------------------------------------------
# Parameters: fp32 masters, forward weights rounded from them
# ------------------------------------------------------------------------------------------

class Params:
    def __init__(self, cfg, tensors):
        self.cfg = cfg
        n = cfg['num_hidden_layers']
        self.master = {}   # name -> fp32 tensor (the trainer's master)
        self.kind = {}     # name -> 'fp8' | 'bf16' | 'f32'
        for name, t in tensors.items():
            if name.endswith('.weight_scale_inv'):
                continue
            if name in (f'model.layers.{n}.embed_tokens.weight', f'model.layers.{n}.shared_head.head.weight'):
                continue  # copies of the main embedding / head (docs/training.md §1)
            sname = name[:-len('.weight')] + '.weight_scale_inv' if name.endswith('.weight') else None
            if sname in tensors:
                s = tensors[sname].to(F32)
                self.master[name] = t.to(F32) * block_scale(s, t.shape)  # fp32 product
                self.kind[name] = 'fp8'
            elif t.dtype == BF16:
                self.master[name] = t.to(F32)
                self.kind[name] = 'bf16'
            else:
                self.master[name] = t.to(F32).clone()
                self.kind[name] = 'f32'
        self.leaf = {}

    def begin(self):
        """New fp64 leaves (requires_grad) holding the masters, and the forward weights."""
        self.leaf = {k: v.to(F64).requires_grad_(k.find('e_score_correction_bias') < 0)
                     for k, v in self.master.items()}
        self.fwd, self.fp8 = {}, {}
        for k, m in self.master.items():
            if self.kind[k] == 'fp8':
                q, s = quant_fp8_weight(m)
                self.fp8[k] = (q, s)
                self.fwd[k] = ste(self.leaf[k], q.to(F64) * block_scale(s, q.shape).to(F64))  # exact product
            elif self.kind[k] == 'bf16':
                self.fwd[k] = ste(self.leaf[k], m.to(BF16))
            else:
                self.fwd[k] = self.leaf[k]

    def w(self, name):
        return self.fwd[name]

    def dequant_bf16(self, name):
        """spec 3.3: fp32(q * s) -> bf16 (the absorbed path's wkv_b), STE from the master."""
        q, s = self.fp8[name]
        return ste(self.leaf[name], (q * block_scale(s, q.shape)).to(BF16))

    def fp8_weight(self, name):
        q, s = self.fp8[name]
        return R.Fp8Weight(q, s)


# ------------------------------------------------------------------------------------------
# The training forward (absorbed attention for every row)
# ------------------------------------------------------------------------------------------

class TrainRef:
    def __init__(self, cfg, params, dense, max_pos):
        c = cfg
        self.c, self.P, self.dense = c, params, dense
        self.n = c['num_hidden_layers']
        self.nh, self.nope, self.rd, self.vd = (c['num_attention_heads'], c['qk_nope_head_dim'],
                                                c['qk_rope_head_dim'], c['v_head_dim'])
        self.kv_lora = c['kv_lora_rank']
        self.eps = float(c.get('rms_norm_eps', 1e-6))
        self.ih, self.id, self.index_topk = c['index_n_heads'], c['index_head_dim'], c['index_topk']
        self.E, self.k = c['n_routed_experts'], c['num_experts_per_tok']
        self.n_group, self.topk_group = c['n_group'], c['topk_group']
        self.route_scale = float(c['routed_scaling_factor'])
        ym = R.yarn_constants(c)['m']
        self.scale = float(R.c32((self.nope + self.rd) ** -0.5 * ym ** 2))
        self.cos, self.sin = R.rope_table(c, max_pos)

    def on_attention(self, i, x, qr, prob, sel):
        """Hook: a layer's attention inputs and probabilities [T, heads, T] (indexer_kl_ref.py)."""

    def is_moe(self, i):
        return i >= self.c['first_k_dense_replace'] and i % self.c.get('moe_layer_freq', 1) == 0

    # -- primitives ------------------------------------------------------------------------
    def lin(self, name, x):
        """FP8 linear: bf16(act_quant(x) . Q(W)^T)."""
        return bf(aq(x) @ self.P.w(name + '.weight').t())

    def rms(self, x, name, residual=None):
        """(bf16 normed, new residual); the sum x + residual is fp32 (kept unrounded inside)."""
        if residual is None:
            r, new_res = x, x
        else:
            r = x + residual
            new_res = bf(r)
        nrm = r * torch.rsqrt((r * r).mean(dim=-1, keepdim=True) + float(R.c32(self.eps)))
        return bf(self.P.w(name) * nrm), new_res

    def rope_il(self, x, T):
        """Interleaved RoPE over the last dim of x [T, ..., rd] at positions 0..T-1, bf16 out."""
        shape = x.shape
        xr = x.reshape(shape[0], -1, shape[-1] // 2, 2)
        c = self.cos[:T, None, :].to(F64)
        s = self.sin[:T, None, :].to(F64)
        a, b = xr[..., 0], xr[..., 1]
        return bf(torch.stack([a * c - b * s, a * s + b * c], dim=-1).reshape(shape))

    # -- decisions (fp32 engine semantics, no gradient) ------------------------------------
    def indexer_topk(self, p, x, qr, T):
        """[T, index_topk] ascending causal selections, -1 padded (spec §7) from bf16 x, qr."""
        xb, qb = x.detach().to(F32).to(BF16), qr.detach().to(F32).to(BF16)
        cos, sin = self.cos[:T], self.sin[:T]
        q = self.P.fp8_weight(p + 'wq_b.weight')(qb).reshape(T, self.ih, self.id)
        q = torch.cat([R.rope_halfsplit(q[..., :self.rd], cos, sin), q[..., self.rd:]], dim=-1)
        k = self.P.fp8_weight(p + 'wk.weight')(xb)
        k = R.layer_norm(k, self.P.master[p + 'k_norm.weight'], self.P.master[p + 'k_norm.bias'], 1e-6)
        k = torch.cat([R.rope_halfsplit(k[:, :self.rd], cos, sin), k[:, self.rd:]], dim=-1)
        q, k = R.hadamard_rotate(q), R.hadamard_rotate(k)
        q8, qs = R.act_quant(q)
        k8, ks = R.act_quant(k)
        wp = self.P.master[p + 'weights_proj.weight'].to(BF16).to(F32)
        w = (R.f32(xb) @ wp.t()) * R.c32(self.ih ** -0.5)
        w = ((w[..., None] * qs) * R.c32(self.id ** -0.5))[..., 0]
        scores = R.fp8_index(q8, w, k8, ks[:, 0])
        scores = scores + torch.full((T, T), float('-inf')).triu(1)
        K = min(self.index_topk, T)
        top = torch.topk(scores, K, dim=-1).indices
        rows = []
        for t in range(T):
            sel = top[t][top[t] <= t].sort().values
            rows.append(torch.cat([sel, torch.full((self.index_topk - sel.numel(),), -1, dtype=torch.int64)]))
        return torch.stack(rows)

    def route(self, p, x):
        """Group-limited top-k on the biased fp32 sigmoid scores (spec §8.2): [T, k] ascending."""
        logits = R.f32(x.detach().to(F32).to(BF16)) @ self.P.master[p + 'gate.weight'].to(BF16).to(F32).t()
        s = torch.sigmoid(logits)
        b = s + self.P.master[p + 'gate.e_score_correction_bias']
        T = b.shape[0]
        g = b.reshape(T, self.n_group, -1)
        keep = g.topk(2, dim=-1).values.sum(dim=-1).topk(self.topk_group, dim=-1).indices
        gmask = torch.ones(T, self.n_group, dtype=torch.bool).scatter_(1, keep, False)
        sel = g.masked_fill(gmask[..., None], float('-inf')).reshape(T, -1)
        return sel.topk(self.k, dim=-1).indices.sort(dim=-1).values

    # -- blocks ----------------------------------------------------------------------------
    def attention(self, i, x, T, topk):
        p = f'model.layers.{i}.self_attn.'
        nh, nope, rd, vd = self.nh, self.nope, self.rd, self.vd
        qr, _ = self.rms(self.lin(p + 'q_a_proj', x), p + 'q_a_layernorm.weight')
        q = self.lin(p + 'q_b_proj', qr).reshape(T, nh, nope + rd)
        q_nope, q_pe = q[..., :nope], self.rope_il(q[..., nope:], T)
        kv = self.lin(p + 'kv_a_proj_with_mqa', x)
        c, _ = self.rms(kv[:, :self.kv_lora], p + 'kv_a_layernorm.weight')
        k_pe = self.rope_il(kv[:, self.kv_lora:], T)
        c = aq(c)  # FP8 latent cache round trip (bf16-exact)
        if self.dense:
            mask = torch.full((T, T), float('-inf'), dtype=F64).triu(1)
        else:
            sel = topk.get(i)
            if sel is None:
                sel = topk[i] = self.indexer_topk(p + 'indexer.', x, qr, T)
            mask = torch.full((T, T), float('-inf'), dtype=F64)
            v = sel >= 0
            mask[v.nonzero()[:, 0], sel[v]] = 0.0
        W = self.P.dequant_bf16(p + 'kv_b_proj.weight').reshape(nh, nope + vd, self.kv_lora)
        w_uk, w_uv = W[:, :nope], W[:, nope:]
        q_abs = bf(torch.einsum('thd,hdc->thc', q_nope, w_uk))
        s1 = bf(torch.einsum('thc,sc->ths', q_abs, c))
        s2 = bf(torch.einsum('thr,sr->ths', q_pe, k_pe))
        sc = bf(bf(s1 + s2) * self.scale)
        prob = bf(torch.softmax(sc + mask[:, None, :], dim=-1))
        self.on_attention(i, x, qr, prob, None if self.dense else sel)
        o_lat = bf(torch.einsum('ths,sc->thc', prob, c))
        o = bf(torch.einsum('thc,hdc->thd', o_lat, w_uv)).reshape(T, nh * vd)
        return self.lin(p + 'o_proj', o)

    def mlp(self, p, x):
        g, u = self.lin(p + 'gate_proj', x), self.lin(p + 'up_proj', x)
        return self.lin(p + 'down_proj', bf(torch.nn.functional.silu(g) * u))

    def moe(self, i, x, experts, moe_out):
        p = f'model.layers.{i}.mlp.'
        idx = experts.get(i)
        if idx is None:
            idx = experts[i] = self.route(p, x)
        s = torch.sigmoid(x @ self.P.w(p + 'gate.weight').t())  # fp32 gate in the engine
        wts = s.gather(1, idx)
        wts = wts / wts.sum(dim=-1, keepdim=True) * self.route_scale
        y = torch.zeros_like(x)
        for e in range(self.E):
            tok, slot = torch.nonzero(idx == e, as_tuple=True)
            if tok.numel():
                y = y.index_add(0, tok, self.mlp(p + f'experts.{e}.', x[tok]) * wts[tok, slot][:, None])
        y = y + self.mlp(p + 'shared_experts.', x)
        moe_out[i] = (s, idx)
        return bf(y)

    def block(self, i, h, residual, T, dec, moe_out):
        p = f'model.layers.{i}.'
        x, residual = self.rms(h, p + 'input_layernorm.weight', residual)
        a = self.attention(i, x, T, dec['topk'])
        x, residual = self.rms(a, p + 'post_attention_layernorm.weight', residual)
        h = self.moe(i, x, dec['experts'], moe_out) if self.is_moe(i) else self.mlp(p + 'mlp.', x)
        return h, residual

    def head_logp(self, hn, targets):
        z = hn @ self.P.w('lm_head.weight').t()
        return torch.log_softmax(z, dim=-1).gather(1, targets[:, None])[:, 0]

    def sequence(self, tokens, dec, mtp):
        """One sequence x[0..T]: main log-probs [T], MTP log-probs [T-1] (or None), and per MoE
        layer (sigmoid scores, chosen experts). dec: {'topk': {layer: sel}, 'experts': {...}},
        filled with our own decisions where absent."""
        T = tokens.shape[0] - 1
        n = self.n
        emb = self.P.w('model.embed_tokens.weight')
        h, residual = emb[tokens[:T]], None
        moe_out = {}
        for i in range(n):
            h, residual = self.block(i, h, residual, T, dec, moe_out)
        hn, _ = self.rms(h, 'model.norm.weight', residual)
        lp = self.head_logp(hn, tokens[1:])
        lpm = None
        if mtp:
            p = f'model.layers.{n}.'
            e, _ = self.rms(emb[tokens[1:T]], p + 'enorm.weight')
            g, _ = self.rms(hn[:T - 1], p + 'hnorm.weight')
            hm = bf(torch.cat([e, g], dim=-1) @ self.P.w(p + 'eh_proj.weight').t())
            hm, res = self.block(n, hm, None, T - 1, dec, moe_out)
            hnm, _ = self.rms(hm, p + 'shared_head.norm.weight', res)
            lpm = self.head_logp(hnm, tokens[2:])
        return lp, lpm, moe_out


def balance(ref, moe_out, rows):
    """Σ_l Σ_e f_e P_e of one sequence (docs/training.md §4), with the loads per layer."""
    total, loads = 0.0, {}
    for layer, (s, idx) in moe_out.items():
        sn = s / s.sum(dim=-1, keepdim=True)
        P = sn.mean(dim=0)
        cnt = torch.bincount(idx.reshape(-1), minlength=ref.E).to(F64)
        f = cnt * (ref.E / (ref.k * rows[layer]))
        total = total + (f * P).sum()
        loads[layer] = cnt
    return total, loads


def batch_loss(ref, tokens, weights, lam, alpha, decisions):
    """tokens [B, T+1], weights [B, T]; decisions: per sequence {'topk': {}, 'experts': {}} (filled)."""
    B, T1 = tokens.shape
    T = T1 - 1
    mtp = lam > 0
    lps, lpms, bal = [], [], 0.0
    loads = {}
    for b in range(B):
        lp, lpm, moe_out = ref.sequence(tokens[b], decisions[b], mtp)
        lps.append(lp)
        if mtp:
            lpms.append(lpm)
        rows = {l: (T if l < ref.n else T - 1) for l in moe_out}
        sb, lb = balance(ref, moe_out, rows)
        bal = bal + sb
        for l, c in lb.items():
            loads[l] = loads.get(l, 0) + c
    lp = torch.stack(lps)
    w = weights.to(F64)
    l_main = -(w * lp).sum() / w.sum()
    l_mtp = torch.zeros((), dtype=F64)
    if mtp:
        lpm = torch.stack(lpms)
        wm = w[:, 1:]
        l_mtp = -(wm * lpm).sum() / wm.sum()
    l_bal = alpha * bal / B
    loss = l_main + lam * l_mtp + l_bal
    return {'loss': loss, 'main': l_main, 'mtp': l_mtp, 'bal': l_bal, 'logp': lp,
            'mtp_logp': torch.stack(lpms) if mtp else None, 'loads': loads}


# ------------------------------------------------------------------------------------------
# AdamW (docs/training.md §5) and the balance-bias rule
# ------------------------------------------------------------------------------------------

class AdamW:
    def __init__(self, params, beta1, beta2, eps, wd, clip):
        self.P, self.b1, self.b2, self.eps, self.wd, self.clip = params, beta1, beta2, eps, wd, clip
        self.m, self.v = {}, {}

    def step(self, step, lr, grads):
        names = sorted(grads)
        norm = math.sqrt(sum(float((grads[k].to(F64) ** 2).sum()) for k in names))
        scale = self.clip / norm if self.clip > 0 and norm > self.clip else 1.0
        t = step + 1
        for k in names:
            g = grads[k].to(F64) * scale
            m = self.m.get(k, torch.zeros_like(g)) * self.b1 + (1 - self.b1) * g
            v = self.v.get(k, torch.zeros_like(g)) * self.b2 + (1 - self.b2) * g * g
            self.m[k], self.v[k] = m, v
            th = self.P.master[k].to(F64)
            upd = (m / (1 - self.b1 ** t)) / (torch.sqrt(v / (1 - self.b2 ** t)) + self.eps)
            if th.dim() == 2:
                upd = upd + self.wd * th
            self.P.master[k] = (th - lr * upd).to(F32)
        return norm


def update_bias(params, n_layers, loads, gamma):
    for layer, load in loads.items():
        name = f'model.layers.{layer}.mlp.gate.e_score_correction_bias'
        d = torch.sign(load.mean() - load)
        params.master[name] = (params.master[name].to(F64) + gamma * d).to(F32)


# ------------------------------------------------------------------------------------------
# Fixture
# ------------------------------------------------------------------------------------------

def grad_tensors(prefix, grads, names):
    out = {}
    for k in names:
        g = grads[k]
        amax = float(g.abs().max()) if g.numel() else 0.0
        e = 0 if amax == 0 else 14 - math.frexp(amax)[1] + 1  # amax * 2^e in [2^14, 2^15)
        out[f'{prefix}grad.{k}'] = torch.ldexp(g, torch.tensor(float(e), dtype=F64)).to(torch.float16)
        out[f'{prefix}gexp.{k}'] = torch.tensor([e], dtype=I32)
    return out


def decision_tensors(prefix, ref, decisions, mtp, B, T):
    """Per layer the rows of all sequences (sequence-major), the C++ Decisions layout."""
    out = {}
    nl = ref.n + (1 if mtp else 0)
    for l in range(nl):
        for key in ('experts', 'topk'):
            rows = [decisions[b][key][l] for b in range(B) if l in decisions[b][key]]
            if rows:
                out[f'{prefix}{key}.l{l}'] = torch.cat(rows).to(I32)
    return out


def run_case(ref, params, tokens, weights, lam, alpha, decisions=None):
    params.begin()
    B = tokens.shape[0]
    decisions = decisions if decisions is not None else [{'topk': {}, 'experts': {}} for _ in range(B)]
    r = batch_loss(ref, tokens, weights, lam, alpha, decisions)
    r['loss'].backward()
    # Every parameter but the correction biases is trainable; one the loss does not reach (the
    # indexer, here) has a zero gradient, and AdamW still decays it.
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in params.leaf.items()
             if v.requires_grad}
    return r, grads, decisions


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--seq-len', type=int, default=16)
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--mtp-weight', type=float, default=0.3)
    ap.add_argument('--balance-alpha', type=float, default=0.1)
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--bias-gamma', type=float, default=1e-3)
    a = ap.parse_args()
    t0 = time.time()
    cfg, tensors = load_all(a.model)
    params = Params(cfg, tensors)
    B, T, V = a.batch, a.seq_len, cfg['vocab_size']
    g = torch.Generator().manual_seed(a.seed)
    tokens = torch.randint(0, V, (B, T + 1), generator=g)
    weights = torch.ones(B, T, dtype=F32)
    weights[0, 3] = 0.0  # a masked target (SFT-style loss weights)
    weights[1, T - 1] = 0.5
    out = {'tokens': tokens.to(I32), 'weights': weights}
    meta = {}
    names = sorted(k for k in params.master if not k.endswith('e_score_correction_bias'))

    # dense: every parameter's gradient, then AdamW steps
    dense = TrainRef(cfg, params, True, T)
    r, grads, dec = run_case(dense, params, tokens, weights, a.mtp_weight, a.balance_alpha)
    out.update(grad_tensors('dense.', grads, names))
    out.update(decision_tensors('dense.', dense, dec, True, B, T))
    out['dense.logp'] = r['logp'].detach().reshape(-1).to(F32)
    out['dense.mtp_logp'] = r['mtp_logp'].detach().reshape(-1).to(F32)
    for k in ('loss', 'main', 'mtp', 'bal'):
        meta[f'dense.{k}'] = repr(float(r[k].detach()))

    # sparse: the indexer's top-k sets; gradients of the attention and the embedding
    sparse = TrainRef(cfg, params, False, T)
    rs, gs, decs = run_case(sparse, params, tokens, weights, a.mtp_weight, a.balance_alpha)
    sparse_names = [k for k in names if ('self_attn.' in k and '.indexer.' not in k) or k == 'model.embed_tokens.weight']
    out.update(grad_tensors('sparse.', gs, sparse_names))
    out.update(decision_tensors('sparse.', sparse, decs, True, B, T))
    out['sparse.logp'] = rs['logp'].detach().reshape(-1).to(F32)
    for k in ('loss', 'main', 'mtp', 'bal'):
        meta[f'sparse.{k}'] = repr(float(rs[k].detach()))
    d_lse = float((rs['logp'] - r['logp']).detach().abs().max())
    print(f'[train_ref] sparse vs dense log-probs differ by up to {d_lse:.3g}')

    # One AdamW step from the gradients exactly as stored (the C++ test loads the same ones):
    # per tensor [Σ Δ, Σ Δ², Σ |Δ|, Σ c_i Δ_i] of the update Δ = θ' - θ, c_i = a fixed
    # pseudo-random ±1 pattern ((i * 2654435761) >> 16 & 1), so a permuted update shows.
    stored = {k: torch.ldexp(out[f'dense.grad.{k}'].to(F64),
                             torch.tensor(-float(out[f'dense.gexp.{k}'][0]), dtype=F64)) for k in names}
    before = {k: v.clone() for k, v in params.master.items()}
    one = AdamW(params, 0.9, 0.95, 1e-8, 0.1, 1.0)
    meta['adam1.grad_norm'] = repr(one.step(0, a.lr, stored))
    for k in names:
        dlt = (params.master[k].to(F64) - before[k].to(F64)).reshape(-1)
        i = torch.arange(dlt.numel(), dtype=torch.int64)
        c = (((i * 2654435761) >> 16) & 1).to(F64) * 2 - 1
        out[f'adam1.{k}'] = torch.stack([dlt.sum(), (dlt * dlt).sum(), dlt.abs().sum(), (c * dlt).sum()]).to(F32)
    params.master = before

    # AdamW steps on the same batch (dense, our own decisions and gradients each step)
    opt = AdamW(params, 0.9, 0.95, 1e-8, 0.1, 1.0)
    losses, norms = [float(r['loss'].detach())], []
    for step in range(a.steps):
        norms.append(opt.step(step, a.lr, grads))
        update_bias(params, dense.n, r['loads'], a.bias_gamma)
        r, grads, dec = run_case(dense, params, tokens, weights, a.mtp_weight, a.balance_alpha)
        out.update(decision_tensors(f'step{step + 1}.', dense, dec, True, B, T))
        losses.append(float(r['loss'].detach()))
    for k in params.master:
        if k.endswith('e_score_correction_bias'):
            out[f'final.{k}'] = params.master[k].clone()
    digest, per_file = checkpoint_digest(a.model)
    meta.update({
        'checkpoint_sha256': digest,
        'checkpoint_files_sha256': json.dumps(per_file, sort_keys=True),
        'torch_version': torch.__version__,
        'batch': str(B), 'seq_len': str(T), 'seed': str(a.seed),
        'mtp_weight': repr(a.mtp_weight), 'balance_alpha': repr(a.balance_alpha),
        'steps': str(a.steps), 'lr': repr(a.lr), 'bias_gamma': repr(a.bias_gamma),
        'adamw': json.dumps({'beta1': 0.9, 'beta2': 0.95, 'eps': 1e-8, 'weight_decay': 0.1, 'clip': 1.0}),
        'step_losses': json.dumps(losses), 'step_grad_norms': json.dumps(norms),
    })
    save_safetensors(out, a.out, meta)
    print(f'[train_ref] dense loss {losses[0]:.6f} (main {meta["dense.main"]}, mtp {meta["dense.mtp"]}, '
          f'bal {meta["dense.bal"]}); sparse loss {meta["sparse.loss"]}; AdamW losses {losses}; '
          f'{os.path.getsize(a.out) / 1e6:.2f} MB in {time.time() - t0:.1f} s')


def load_all(model_dir):
    """config and every tensor, the MTP layer's included."""
    from safetensors import safe_open
    with open(os.path.join(model_dir, 'config.json')) as fh:
        cfg = json.load(fh)
    tensors = {}
    for fn in R.checkpoint_files(model_dir):
        with safe_open(fn, framework='pt') as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    return cfg, tensors


if __name__ == '__main__':
    main()
