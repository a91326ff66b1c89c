# Regenerates tests/fixtures/ops/*.bin: torch emulations of the reference ops (spec §3, §8.2) that
# tests/ops_ref_test.cc and tests/numeric_test.cc compare against. Raw little-endian arrays.
import math
import os

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "ops")
G = torch.Generator().manual_seed(1234)


def save(name, t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    elif t.dtype == torch.float8_e4m3fn:
        t = t.view(torch.uint8)
    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
        f.write(t.numpy().tobytes())


def randn(*shape, scale=1.0):
    return torch.randn(*shape, generator=G) * scale


def ue8m0(amax):  # smallest power of two >= amax * fp32(1/448), from the fp32 bits (spec §3.1)
    t = amax.float() * torch.tensor(1.0 / 448.0, dtype=torch.float32)
    bits = t.view(torch.int32)
    e = ((bits >> 23) & 0xFF) - 127 + ((bits & 0x7FFFFF) != 0).int()
    return ((e + 127) << 23).int().view(torch.float32)


def act_quant(x):  # x bf16 [M, K], partial last block allowed
    M, K = x.shape
    q = torch.empty(M, K, dtype=torch.float8_e4m3fn)
    s = torch.empty(M, (K + 127) // 128)
    for b in range(0, K, 128):
        blk = x[:, b:b + 128].float()
        amax = blk.abs().amax(dim=-1).clamp(min=1e-4)
        sc = ue8m0(amax)
        q[:, b:b + 128] = (blk / sc[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
        s[:, b // 128] = sc
    return q, s


def fp8_gemm(a, a_s, w, w_s):  # sequential fp32 dot per 128-block, fp32 scale product, bf16 out
    M, K = a.shape
    N = w.shape[0]
    af, wf = a.float(), w.float()
    wsn = w_s.repeat_interleave(128, dim=0)[:N]  # [N, nb]
    acc = torch.zeros(M, N)
    for kb, b in enumerate(range(0, K, 128)):
        dot = torch.zeros(M, N)
        for k in range(b, min(K, b + 128)):
            dot = dot + af[:, k:k + 1] * wf[None, :, k]
        acc = acc + dot * (a_s[:, kb:kb + 1] * wsn[None, :, kb])
    return acc.to(torch.bfloat16)


def gen_fp8():
    bits = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    save("fp8_encode_all_bf16", bits.float().clamp(-448, 448).to(torch.float8_e4m3fn))
    save("fp8_decode_all", torch.arange(256, dtype=torch.int32).to(torch.uint8)
         .view(torch.float8_e4m3fn).float())


def adversarial_x(M, K):
    x = randn(M, K)
    x[1] = randn(K, scale=1e-6)                 # amax < 1e-4: clamped amax
    x[2] = 0.0                                  # all zeros
    x[3, :] = randn(K, scale=1e3)               # large values, near fp8 saturation
    x[3, 5] = 448.0 * 4                         # exact power-of-two multiple of 448
    x[4, :] = torch.linspace(-1, 1, K) * 3.0e-3  # tiny values: fp8 subnormals after scaling
    x[5, :K // 2] = 1.0                         # partial-block boundary patterns
    x[5, K - 1] = -65504.0
    return x.to(torch.bfloat16)


def gen_act_quant():
    x = adversarial_x(8, 300)
    q, s = act_quant(x)
    save("act_quant.x", x), save("act_quant.q", q), save("act_quant.s", s)


def gen_fp8_gemm():
    M, N, K = 5, 200, 300
    x = randn(M, K).to(torch.bfloat16)
    a, a_s = act_quant(x)
    w = (randn(N, K) * 0.5).clamp(-448, 448).to(torch.float8_e4m3fn)
    w_s = torch.rand((N + 127) // 128, (K + 127) // 128, generator=G) * 1e-2 + 1e-3  # not powers of 2
    y = fp8_gemm(a, a_s, w, w_s)
    for n, t in [("a", a), ("a_s", a_s), ("w", w), ("w_s", w_s), ("y", y)]:
        save("fp8_gemm." + n, t)


def rope_tables(max_pos, rope_dim):  # spec §1.1 without YaRN: f_i = 1/10000^(2i/d); polar()
    freqs = 1.0 / (10000.0 ** (torch.arange(0, rope_dim, 2, dtype=torch.float32) / rope_dim))
    ang = torch.outer(torch.arange(max_pos), freqs)
    return torch.polar(torch.ones_like(ang), ang)


def rope_complex(x, fc, interleaved):  # the reference apply_rotary_emb, complex64
    shape = x.shape
    xf = x.float()
    if not interleaved:
        xf = xf.view(*shape[:-1], 2, -1).transpose(-1, -2).contiguous()
    xc = torch.view_as_complex(xf.view(*shape[:-1], -1, 2))
    y = torch.view_as_real(xc * fc).flatten(-2)
    if not interleaved:
        y = torch.cat([y[..., 0::2], y[..., 1::2]], dim=-1)
    return y.to(torch.bfloat16)


def gen_rope():
    M, H, D, max_pos = 7, 3, 64, 100
    fc = rope_tables(max_pos, D)
    pos = torch.tensor([0, 1, 5, 17, 42, 63, 99], dtype=torch.int32)
    x = (randn(M, H, D) * 2).to(torch.bfloat16)
    save("rope.x", x), save("rope.pos", pos)
    save("rope.cos", fc.real.contiguous()), save("rope.sin", fc.imag.contiguous())
    f = fc[pos.long()][:, None, :]
    save("rope.y_interleaved", rope_complex(x, f, True))
    save("rope.y_halfsplit", rope_complex(x, f, False))


def sylvester(n):
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def gen_hadamard():
    M, n = 6, 128
    x = (randn(M, n) * 3).to(torch.bfloat16)
    y = ((x.double() @ sylvester(n).double().T) * n ** -0.5).to(torch.bfloat16)
    save("hadamard.x", x), save("hadamard.y", y)


def gen_moe_gate():
    T, E, n_group, topk_group, topk, route_scale = 16, 64, 8, 4, 6, 2.5
    logits = randn(T, E, scale=2.0)
    bias = randn(E, scale=0.1)
    scores = logits.sigmoid()
    original = scores
    scores = scores + bias
    gscores = scores.view(T, n_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
    gidx = gscores.topk(topk_group, dim=-1)[1]
    mask = scores.new_ones(T, n_group, dtype=torch.bool).scatter_(1, gidx, False)
    scores = scores.view(T, n_group, -1).masked_fill_(mask.unsqueeze(-1), float("-inf")).flatten(1)
    idx = torch.topk(scores, topk, dim=-1)[1]
    weights = original.gather(1, idx)
    weights = weights / weights.sum(dim=-1, keepdim=True) * route_scale
    order = idx.argsort(dim=-1)
    save("moe_gate.logits", logits), save("moe_gate.bias", bias)
    save("moe_gate.experts", idx.gather(1, order).int())
    save("moe_gate.weights", weights.gather(1, order))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    gen_fp8()
    gen_act_quant()
    gen_fp8_gemm()
    gen_rope()
    gen_hadamard()
    gen_moe_gate()
    print("wrote", sorted(os.listdir(OUT)))
