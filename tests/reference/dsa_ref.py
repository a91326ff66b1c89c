"""Independent numerical reference for DeepSeek-V3.2 (DSA) inference.

Written from ../../../shared/spec/dsa-v32.md (the "later demo" semantics, spec section 0),
not from the engine's C++ code.  Plain PyTorch on CPU, batch 1, MP=1.

Conventions used throughout this file:
  * bf16 "activations" are held in torch.bfloat16 tensors; every op that the spec says is
    "fp32 math, bf16 out" is written as an explicit .float() ... .to(BF16) so nothing depends
    on torch's default dtype.
  * FP8 (e4m3fn) values are held as float32 tensors whose values are exactly representable in
    e4m3fn (see fp8_round).  Scales are float32.
  * Dimensions come from config.json; quantisation blocks that do not divide a dimension are
    handled with a partial last block (spec trap 13).
"""

import glob
import json
import math
import os

import torch
from safetensors import safe_open

BF16 = torch.bfloat16
F32 = torch.float32
BLOCK = 128
FP8_MAX = 448.0


def bf16(x):
    """Round to bf16 (RNE)."""
    return x.to(BF16)


def f32(x):
    return x.to(F32)


def c32(v):
    """A Python constant as an fp32 tensor scalar (PyTorch multiplies tensors by scalars in
    fp32 opmath for bf16/fp32 tensors, i.e. the constant is first rounded to fp32)."""
    return torch.tensor(v, dtype=F32)


# ----------------------------------------------------------------------------------------
# FP8 primitives (spec 3.1 - 3.3, 3.8)
# ----------------------------------------------------------------------------------------

def fp8_round(x):
    """Round fp32 values (already clamped to [-448, 448]) to the nearest e4m3fn value,
    ties to even.  Returns fp32 holding the exact fp8 values.

    e4m3fn: 3 mantissa bits, minimum normal exponent -6, subnormal quantum 2^-9.
    For |x| in [2^e, 2^(e+1)) the spacing is 2^(e-3); below 2^-6 the spacing is 2^-9.
    """
    x = f32(x)
    ax = x.abs()
    _, ex = torch.frexp(ax)  # ax = m * 2^ex, m in [0.5, 1)  =>  floor(log2 ax) = ex - 1
    e = (ex.to(torch.int32) - 1).clamp(min=-6)
    quantum = torch.ldexp(torch.ones_like(ax), (e - 3).to(F32))
    # ax / quantum is exact (power of two); torch.round is round-half-to-even.
    y = torch.round(ax / quantum) * quantum
    y = torch.where(ax == 0, torch.zeros_like(ax), y)
    return torch.copysign(y, x)


def ue8m0_scale(amax):
    """Smallest power of two >= fp32(amax * fp32(1/448)) (spec 3.1 step 2), via IEEE bits."""
    t = f32(amax) * c32(1.0 / FP8_MAX)
    bits = t.view(torch.int32)
    exp = ((bits >> 23) & 0xFF) - 127
    mant = bits & 0x7FFFFF
    e = exp + (mant != 0).to(torch.int32)
    return ((e + 127) << 23).to(torch.int32).view(F32)


def act_quant(x, block=BLOCK):
    """Per-row, per-`block`-column ue8m0 quantisation of the last dim (spec 3.1).
    A partial last block (dim % block != 0) is quantised with its own amax, same rule.
    Returns (y fp32-holding-fp8 values, same shape as x; s fp32 [..., ceil(N/block)])."""
    x = f32(x)
    n = x.shape[-1]
    nb = (n + block - 1) // block
    ys, ss = [], []
    for b in range(nb):
        xb = x[..., b * block:min(n, (b + 1) * block)]
        amax = xb.abs().amax(dim=-1, keepdim=True).clamp(min=1e-4)
        s = ue8m0_scale(amax)
        ys.append(fp8_round((xb / s).clamp(-FP8_MAX, FP8_MAX)))
        ss.append(s)
    return torch.cat(ys, dim=-1), torch.cat(ss, dim=-1)


def dequant_act(y, s, block=BLOCK):
    """y (fp8 values) * per-block scale, fp32."""
    n = y.shape[-1]
    s_full = s.repeat_interleave(block, dim=-1)[..., :n]
    return y * s_full


def fp8_gemm(a, a_s, w, w_s, block=BLOCK):
    """spec 3.2.  a: [M,K] fp8 values (fp32), a_s: [M, nKb]; w: [N,K] fp8 values (fp32),
    w_s: [ceil(N/128), nKb].  Per-K-block fp32 dots, scaled by (a_s*w_s) formed in fp32,
    accumulated in fp32 in increasing block order; bf16 out."""
    M, K = a.shape
    N = w.shape[0]
    nkb = (K + block - 1) // block
    w_s_rows = w_s.repeat_interleave(block, dim=0)[:N]  # [N, nKb]
    acc = torch.zeros(M, N, dtype=F32)
    for kb in range(nkb):
        sl = slice(kb * block, min(K, (kb + 1) * block))
        part = a[:, sl] @ w[:, sl].t()  # products exact in fp32, fp32 accumulation
        scale = a_s[:, kb:kb + 1] * w_s_rows[:, kb][None, :]  # fp32 product first
        acc = acc + part * scale
    return bf16(acc)


class Fp8Weight:
    """An FP8 matrix [out, in] with its block scale_inv [ceil(out/128), ceil(in/128)]."""

    def __init__(self, w, s):
        self.w = f32(w)  # exact fp8 values
        self.s = f32(s)
        out_f, in_f = self.w.shape
        assert tuple(self.s.shape) == ((out_f + BLOCK - 1) // BLOCK, (in_f + BLOCK - 1) // BLOCK), \
            (tuple(self.w.shape), tuple(self.s.shape))

    @property
    def shape(self):
        return self.w.shape

    def __call__(self, x):
        """Linear: act_quant(x) -> fp8_gemm, bf16 out.  x: [..., in] bf16."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        a, a_s = act_quant(x2)
        y = fp8_gemm(a, a_s, self.w, self.s)
        return y.reshape(*lead, -1)

    def dequant(self):
        """spec 3.3: (fp8 as fp32 * block scale) -> bf16."""
        out_f, in_f = self.w.shape
        s_full = self.s.repeat_interleave(BLOCK, 0)[:out_f].repeat_interleave(BLOCK, 1)[:, :in_f]
        return bf16(self.w * s_full)


def fp8_index(q, w, k, k_s):
    """spec 3.8.  q: [T,H,D] fp8 values, w: [T,H] fp32, k: [S,D] fp8 values, k_s: [S] fp32.
    logit[t,s] = k_s[s] * sum_h relu(q[t,h].k[s]) * w[t,h]   (fp32)."""
    dots = torch.einsum('thd,sd->tsh', q, k)  # fp32, products exact
    return (dots.clamp(min=0) * w[:, None, :]).sum(dim=-1) * k_s[None, :]


# ----------------------------------------------------------------------------------------
# Norms, RoPE, Hadamard (spec 3.4 - 3.7, 1.1)
# ----------------------------------------------------------------------------------------

def rms_norm(x, weight, eps, residual=None):
    """spec 3.4.  Returns (bf16 normed, new bf16 residual)."""
    if residual is None:
        r = f32(x)
        new_res = x
    else:
        r = f32(x) + f32(residual)
        new_res = bf16(r)
    n = r * torch.rsqrt((r * r).mean(dim=-1, keepdim=True) + c32(eps))
    return bf16(weight * n), new_res


def layer_norm(x, weight, bias, eps):
    """spec 3.5: fp32 LayerNorm (biased variance), bf16 out."""
    r = f32(x)
    mu = r.mean(dim=-1, keepdim=True)
    var = ((r - mu) ** 2).mean(dim=-1, keepdim=True)
    return bf16((r - mu) * torch.rsqrt(var + c32(eps)) * weight + bias)


def yarn_constants(cfg):
    """Returns dict with low, high, inv_freq (fp32 [rope_dim/2]), softmax mscale factor m."""
    rd = cfg['qk_rope_head_dim']
    base = float(cfg.get('rope_theta', 10000.0))
    rs = cfg.get('rope_scaling') or {}
    idx = torch.arange(0, rd, 2, dtype=F32)
    freqs = 1.0 / (torch.tensor(base, dtype=F32) ** (idx / rd))  # fp32
    out = {'low': None, 'high': None, 'm': 1.0, 'freqs_raw': freqs.clone()}
    yarn_on = rs.get('type', rs.get('rope_type')) == 'yarn' and float(rs.get('factor', 1.0)) > 1.0
    if yarn_on:
        factor = float(rs['factor'])
        orig = float(rs['original_max_position_embeddings'])
        beta_fast = float(rs.get('beta_fast', 32))
        beta_slow = float(rs.get('beta_slow', 1))

        def corr_dim(r):
            return rd * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(corr_dim(beta_fast)), 0)
        high = min(math.ceil(corr_dim(beta_slow)), rd - 1)
        if low == high:
            high += 0.001  # degenerate ramp guard (not hit for the real / tiny configs)
        ramp = ((torch.arange(rd // 2, dtype=F32) - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
        mscale = float(rs.get('mscale', 1.0))
        out.update(low=low, high=high, m=0.1 * mscale * math.log(factor) + 1.0)
    out['freqs'] = freqs
    return out


def rope_table(cfg, n_pos):
    """cos/sin fp32 [n_pos, rope_dim/2]: theta = fp32(pos * f'_i)."""
    f = yarn_constants(cfg)['freqs']
    theta = torch.outer(torch.arange(n_pos, dtype=torch.int64).to(F32), f)
    return torch.cos(theta), torch.sin(theta)


def _rotate(a, b, cos, sin):
    a, b = f32(a), f32(b)
    return a * cos - b * sin, a * sin + b * cos


def rope_interleaved(x, cos, sin):
    """MLA RoPE: pairs (x[2i], x[2i+1]).  x: [S, ..., rd] bf16; cos/sin [S, rd/2]."""
    shape = x.shape
    xr = x.reshape(shape[0], -1, shape[-1] // 2, 2)
    c, s = cos[:, None, :], sin[:, None, :]
    y0, y1 = _rotate(xr[..., 0], xr[..., 1], c, s)
    return bf16(torch.stack([y0, y1], dim=-1).reshape(shape))


def rope_halfsplit(x, cos, sin):
    """Indexer RoPE: pairs (x[i], x[i+rd/2])."""
    shape = x.shape
    half = shape[-1] // 2
    xr = x.reshape(shape[0], -1, shape[-1])
    c, s = cos[:, None, :], sin[:, None, :]
    y0, y1 = _rotate(xr[..., :half], xr[..., half:], c, s)
    return bf16(torch.cat([y0, y1], dim=-1).reshape(shape))


def hadamard_matrix(n):
    """Sylvester order: H_{2m} = [[H, H], [H, -H]]."""
    assert n & (n - 1) == 0
    h = torch.ones(1, 1, dtype=F32)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_rotate(x):
    """spec 3.7: y = (H x) * n^-0.5 in fp32, bf16 out (over the last dim)."""
    n = x.shape[-1]
    h = hadamard_matrix(n)
    return bf16((f32(x) @ h.t()) * c32(n ** -0.5))


def bf16_einsum(eq, *ops):
    """bf16 einsum: bf16 inputs, fp32 accumulation, bf16 result."""
    return bf16(torch.einsum(eq, *[f32(o) for o in ops]))


def bf16_softmax(x):
    """softmax over the last dim on a bf16 tensor: fp32 internally, bf16 out."""
    return bf16(torch.softmax(f32(x), dim=-1))


# ----------------------------------------------------------------------------------------
# Checkpoint loading
# ----------------------------------------------------------------------------------------

def checkpoint_files(model_dir):
    idx = os.path.join(model_dir, 'model.safetensors.index.json')
    if os.path.exists(idx):
        with open(idx) as fh:
            names = sorted(set(json.load(fh)['weight_map'].values()))
        return [os.path.join(model_dir, n) for n in names]
    return sorted(glob.glob(os.path.join(model_dir, '*.safetensors')))


def load_checkpoint(model_dir):
    with open(os.path.join(model_dir, 'config.json')) as fh:
        cfg = json.load(fh)
    n_layers = cfg['num_hidden_layers']
    tensors = {}
    for fn in checkpoint_files(model_dir):
        with safe_open(fn, framework='pt') as f:
            for name in f.keys():
                if name.startswith('model.layers.'):
                    if int(name.split('.')[2]) >= n_layers:
                        continue  # MTP layer(s): ignored
                tensors[name] = f.get_tensor(name)
    return cfg, tensors


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------

class Trace:
    """Collects test intermediates (keys -> fp32 tensors); a no-op when disabled."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.d = {}

    def put(self, key, val):
        if self.enabled:
            self.d.setdefault(key, []).append(val.detach().clone())


class DSAModel:
    def __init__(self, cfg, tensors, max_seq_len=None, forced=None):
        """forced: optional decision replay (spec trap 14): {'l{i}.topk': I [T, index_topk]
        (selected positions, -1 padded, i.e. the fixture's topk rows), 'l{i}.experts':
        I [T, n_act]} indexed by absolute position; rows present replace the reference's own
        top-k sets / routed experts (weights are still computed from the gate scores)."""
        self.forced = dict(forced or {})
        self.cfg = cfg
        self.t = tensors
        c = cfg
        self.H = c['hidden_size']
        self.n_layers = c['num_hidden_layers']
        self.n_heads = c['num_attention_heads']
        self.nope = c['qk_nope_head_dim']
        self.rd = c['qk_rope_head_dim']
        self.vd = c['v_head_dim']
        self.kv_lora = c['kv_lora_rank']
        self.eps = float(c.get('rms_norm_eps', 1e-6))
        self.ih = c['index_n_heads']
        self.id = c['index_head_dim']
        self.index_topk = c['index_topk']
        self.n_dense = c['first_k_dense_replace']
        self.n_experts = c['n_routed_experts']
        self.n_act = c['num_experts_per_tok']
        self.n_group = c['n_group']
        self.topk_group = c['topk_group']
        self.route_scale = float(c['routed_scaling_factor'])
        self.norm_topk_prob = bool(c.get('norm_topk_prob', True))
        assert c.get('scoring_func', 'sigmoid') == 'sigmoid'
        qc = c.get('quantization_config') or {}
        assert qc.get('scale_fmt', 'ue8m0') == 'ue8m0' and list(qc.get('weight_block_size', [128, 128])) == [128, 128], \
            'only ue8m0 activation scales and 128x128 weight blocks are implemented'
        self.noaux_tc = c.get('topk_method', 'noaux_tc') == 'noaux_tc'
        yc = yarn_constants(c)
        self.softmax_scale = (self.nope + self.rd) ** -0.5 * yc['m'] ** 2
        self.max_seq_len = max_seq_len or 4096
        self.cos, self.sin = rope_table(c, self.max_seq_len)
        self._wkv_b_deq = {}
        self.reset()

    # -- weights ------------------------------------------------------------------------
    def W(self, name):
        """The FP8 Linear `name` (weight + weight_scale_inv)."""
        return Fp8Weight(self.t[name + '.weight'], self.t[name + '.weight_scale_inv'])

    def V(self, name):
        return self.t[name]

    def is_moe(self, i):
        return i >= self.n_dense and i % self.cfg.get('moe_layer_freq', 1) == 0

    def reset(self):
        self.kv_cache = [None] * self.n_layers   # bf16 [T, kv_lora] (fp8-exact values)
        self.pe_cache = [None] * self.n_layers   # bf16 [T, rd]
        self.ik_cache = [None] * self.n_layers   # fp32-held fp8 [T, id]
        self.iks_cache = [None] * self.n_layers  # fp32 [T]
        self.pos = 0

    # -- indexer (spec 7) ------------------------------------------------------------------
    def indexer(self, i, x, qr, start, end, causal, tr, tag):
        p = f'model.layers.{i}.self_attn.indexer.'
        S = x.shape[0]
        cos, sin = self.cos[start:end], self.sin[start:end]
        q = self.W(p + 'wq_b')(qr).reshape(S, self.ih, self.id)
        q = torch.cat([rope_halfsplit(q[..., :self.rd], cos, sin), q[..., self.rd:]], dim=-1)
        k = self.W(p + 'wk')(x)
        k = layer_norm(k, f32(self.V(p + 'k_norm.weight')), f32(self.V(p + 'k_norm.bias')), 1e-6)
        k = torch.cat([rope_halfsplit(k[:, :self.rd], cos, sin), k[:, self.rd:]], dim=-1)
        q = hadamard_rotate(q)
        k = hadamard_rotate(k)
        if i == 0 and tag == 'prefill':
            tr.put('l0.indexer.q', q)
            tr.put('l0.indexer.k', k)
        q_fp8, q_s = act_quant(q)           # q_s [S, ih, 1]
        k_fp8, k_s = act_quant(k)           # k_s [S, 1]
        self.ik_cache[i] = k_fp8 if self.ik_cache[i] is None else torch.cat([self.ik_cache[i], k_fp8])
        ks = k_s[:, 0]
        self.iks_cache[i] = ks if self.iks_cache[i] is None else torch.cat([self.iks_cache[i], ks])
        wp = f32(self.V(p + 'weights_proj.weight'))
        w = f32(x) @ wp.t()                                   # fp32 GEMM
        w = w * c32(self.ih ** -0.5)
        w = (w[..., None] * q_s) * c32(self.id ** -0.5)       # [S, ih, 1]
        w = w[..., 0]
        if i == 0 and tag == 'prefill':
            tr.put('l0.indexer.weights', w)
        scores = fp8_index(q_fp8, w, self.ik_cache[i][:end], self.iks_cache[i][:end])  # [S, end]
        if causal is not None:
            scores = scores + causal
        K = min(self.index_topk, end)
        topk = torch.topk(scores, K, dim=-1).indices
        # fixture form: causal part only, ascending, -1 padded to index_topk.  Dropping the
        # (masked) future picks of prefill rows does not change the attention mask.
        rows = []
        for r in range(S):
            qpos = start + r
            sel = topk[r][topk[r] <= qpos].sort().values
            pad = torch.full((self.index_topk - sel.numel(),), -1, dtype=torch.int64)
            rows.append(torch.cat([sel, pad]))
        sel = torch.stack(rows)
        forced = self.forced.get(f'l{i}.topk')
        if forced is not None:
            sel = forced[start:end].to(torch.int64)
        tr.put(f'l{i}.topk.{tag}', sel)
        tr.put(f'l{i}.index_scores.{tag}', scores)
        return sel

    @staticmethod
    def selection_mask(sel, end):
        """fp32 [S, end]: 0 at the selected key positions (-1 = padding), -inf elsewhere."""
        mask = torch.full((sel.shape[0], end), float('-inf'), dtype=F32)
        valid = sel >= 0
        mask[valid.nonzero()[:, 0], sel[valid]] = 0.0
        return mask

    # -- MLA (spec 5, 6) -------------------------------------------------------------------
    def attention(self, i, x, start, tr, tag):
        p = f'model.layers.{i}.self_attn.'
        S = x.shape[0]
        end = start + S
        cos, sin = self.cos[start:end], self.sin[start:end]
        nh, nope, rd, vd = self.n_heads, self.nope, self.rd, self.vd

        qr, _ = rms_norm(self.W(p + 'q_a_proj')(x), f32(self.V(p + 'q_a_layernorm.weight')), self.eps)
        q = self.W(p + 'q_b_proj')(qr).reshape(S, nh, nope + rd)
        q_nope, q_pe = q[..., :nope], rope_interleaved(q[..., nope:], cos, sin)
        kv_full = self.W(p + 'kv_a_proj_with_mqa')(x)
        c, k_pe = kv_full[:, :self.kv_lora], kv_full[:, self.kv_lora:]
        c, _ = rms_norm(c, f32(self.V(p + 'kv_a_layernorm.weight')), self.eps)
        k_pe = rope_interleaved(k_pe, cos, sin)
        c8, cs = act_quant(c)
        c = bf16(dequant_act(c8, cs))  # FP8 KV-cache simulation
        if i == 0 and tag == 'prefill':
            tr.put('l0.qr', qr)
            tr.put('l0.q', torch.cat([q_nope, q_pe], dim=-1))
            tr.put('l0.kv', c)
            tr.put('l0.k_pe', k_pe)
        self.kv_cache[i] = c if self.kv_cache[i] is None else torch.cat([self.kv_cache[i], c])
        self.pe_cache[i] = k_pe if self.pe_cache[i] is None else torch.cat([self.pe_cache[i], k_pe])
        scale = c32(self.softmax_scale)

        if S > 1:
            assert start == 0, 'prefill only at start_pos 0 (no chunked prefill)'
            causal = torch.full((S, S), float('-inf'), dtype=F32).triu(1)
            kvb = self.W(p + 'kv_b_proj')(c).reshape(S, nh, nope + vd)
            k_nope, v = kvb[..., :nope], kvb[..., nope:]
            k = torch.cat([k_nope, k_pe[:, None, :].expand(S, nh, rd)], dim=-1)
            qf = torch.cat([q_nope, q_pe], dim=-1)
            scores = bf16_einsum('shd,thd->sht', qf, k)
            scores = bf16(f32(scores) * scale)
            sel = self.indexer(i, x, qr, start, end, causal, tr, tag)
            index_mask = bf16(self.selection_mask(sel, end) + causal)
            scores = bf16(f32(scores) + f32(index_mask)[:, None, :])
            prob = bf16_softmax(scores)
            o = bf16_einsum('sht,thd->shd', prob, v)
        else:
            if i not in self._wkv_b_deq:
                self._wkv_b_deq[i] = self.W(p + 'kv_b_proj').dequant().reshape(nh, nope + vd, self.kv_lora)
            wkv_b = self._wkv_b_deq[i]
            w_uk, w_uv = wkv_b[:, :nope], wkv_b[:, nope:]
            q_abs = bf16_einsum('shd,hdc->shc', q_nope, w_uk)
            s1 = bf16_einsum('shc,tc->sht', q_abs, self.kv_cache[i][:end])
            s2 = bf16_einsum('shr,tr->sht', q_pe, self.pe_cache[i][:end])
            scores = bf16(f32(s1) + f32(s2))
            scores = bf16(f32(scores) * scale)
            sel = self.indexer(i, x, qr, start, end, None, tr, tag)
            index_mask = self.selection_mask(sel, end)
            scores = bf16(f32(scores) + index_mask[:, None, :])
            prob = bf16_softmax(scores)
            o_lat = bf16_einsum('sht,tc->shc', prob, self.kv_cache[i][:end])
            o = bf16_einsum('shc,hdc->shd', o_lat, w_uv)
        o = o.reshape(S, nh * vd)
        out = self.W(p + 'o_proj')(o)
        if i == 0 and tag == 'prefill':
            tr.put('l0.attn_o', o)
            tr.put('l0.attn_out', out)
        return out

    # -- FFN (spec 8) ----------------------------------------------------------------------
    def mlp(self, prefix, x):
        g = f32(self.W(prefix + 'gate_proj')(x))
        u = f32(self.W(prefix + 'up_proj')(x))
        return self.W(prefix + 'down_proj')(bf16(torch.nn.functional.silu(g) * u))

    def gate(self, i, x, tr, tag):
        p = f'model.layers.{i}.mlp.gate.'
        T = x.shape[0]
        logits = f32(x) @ f32(self.V(p + 'weight')).t()
        s = torch.sigmoid(logits)
        if self.noaux_tc:
            b = s + f32(self.V(p + 'e_score_correction_bias'))
        else:
            b = s
        tr.put(f'l{i}.gate_scores.{tag}', b)
        if self.n_group > 1:
            g = b.reshape(T, self.n_group, -1)
            if self.noaux_tc:
                gscore = g.topk(2, dim=-1).values.sum(dim=-1)
            else:
                gscore = g.amax(dim=-1)
            keep = gscore.topk(self.topk_group, dim=-1).indices
            gmask = torch.ones(T, self.n_group, dtype=torch.bool).scatter_(1, keep, False)
            sel_scores = g.masked_fill(gmask[..., None], float('-inf')).reshape(T, -1)
        else:
            sel_scores = b
        idx = sel_scores.topk(self.n_act, dim=-1).indices
        forced = self.forced.get(f'l{i}.experts')
        if forced is not None:
            idx = forced[self.pos:self.pos + T].to(torch.int64)
            # same order as torch.topk would give (descending biased score), so that the
            # weight normalisation sums in the same order as a free run
            idx = idx.gather(1, b.gather(1, idx).argsort(dim=-1, descending=True, stable=True))
        wts = s.gather(1, idx)
        if self.norm_topk_prob:
            wts = wts / wts.sum(dim=-1, keepdim=True)
        wts = wts * c32(self.route_scale)
        order = idx.argsort(dim=-1)
        tr.put(f'l{i}.experts.{tag}', idx.gather(1, order))
        tr.put(f'l{i}.expert_weights.{tag}', wts.gather(1, order))
        return idx, wts

    def moe(self, i, x, tr, tag):
        p = f'model.layers.{i}.mlp.'
        idx, wts = self.gate(i, x, tr, tag)
        y = torch.zeros(x.shape, dtype=F32)
        for e in range(self.n_experts):
            tok, slot = torch.nonzero(idx == e, as_tuple=True)
            if tok.numel() == 0:
                continue
            out = self.mlp(p + f'experts.{e}.', x[tok])
            y[tok] += f32(out) * wts[tok, slot][:, None]
        y = y + f32(self.mlp(p + 'shared_experts.', x))
        return bf16(y)

    # -- whole model (spec 4) --------------------------------------------------------------
    def forward(self, tokens, tr=None, all_logits=False):
        """tokens: int64 [S].  S > 1: prefill at the current position (must be 0);
        S == 1: decode step.  Returns fp32 logits [V] of the last position, or [S, V]
        when all_logits (test extension: final norm + head on every position)."""
        tr = tr or Trace(False)
        S = tokens.shape[0]
        start = self.pos
        end = start + S
        assert end <= self.max_seq_len
        tag = 'prefill' if S > 1 else 'decode'
        h = self.V('model.embed_tokens.weight')[tokens].to(BF16)
        residual = None
        for i in range(self.n_layers):
            p = f'model.layers.{i}.'
            x, residual = rms_norm(h, f32(self.V(p + 'input_layernorm.weight')), self.eps, residual)
            if i == 0 and tag == 'prefill':
                tr.put('l0.attn_norm', x)
            a = self.attention(i, x, start, tr, tag)
            x, residual = rms_norm(a, f32(self.V(p + 'post_attention_layernorm.weight')), self.eps, residual)
            if self.is_moe(i):
                h = self.moe(i, x, tr, tag)
            else:
                h = self.mlp(p + 'mlp.', x)
            if i == 0 and tag == 'prefill':
                tr.put('l0.ffn_norm', x)
                tr.put('l0.ffn_out', h)
                tr.put('l0.residual', residual)
        self.pos = end
        hn, _ = rms_norm(h, f32(self.V('model.norm.weight')), self.eps, residual)
        head = f32(self.V('lm_head.weight'))
        if all_logits:
            return f32(hn) @ head.t()
        return f32(hn[-1]) @ head.t()
