#!/usr/bin/env python3
"""Self-checks of the Python reference.  Plain asserts; run with

  python3 tests/reference/test_dsa_ref.py [--model DIR]

Without --model (or env DSA_TINY_MODEL) a random checkpoint with the tiny config is built
in memory (random_checkpoint below).
"""

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsa_ref as R  # noqa: E402

F32, BF16 = torch.float32, torch.bfloat16

TINY_CONFIG = {
    "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32", "vocab_size": 1000,
    "hidden_size": 256, "intermediate_size": 384, "moe_intermediate_size": 192,
    "num_hidden_layers": 3, "num_nextn_predict_layers": 1, "num_attention_heads": 4,
    "num_key_value_heads": 4, "q_lora_rank": 192, "kv_lora_rank": 128, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 16, "n_shared_experts": 1,
    "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc",
    "scoring_func": "sigmoid", "norm_topk_prob": True, "routed_scaling_factor": 2.5,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "index_n_heads": 4, "index_head_dim": 128,
    "index_topk": 32, "max_position_embeddings": 163840, "rms_norm_eps": 1e-06, "rope_theta": 10000,
    "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False, "bos_token_id": 0,
    "eos_token_id": 1, "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                            "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
}


# ----------------------------------------------------------------------------------------
# random checkpoint (spec section 2 names / dtypes), used by the self-checks and as a
# stand-in checkpoint before `dsa make-model` exists
# ----------------------------------------------------------------------------------------

def _fp8_matrix(g, out_f, in_f):
    w = torch.randn(out_f, in_f, generator=g) / math.sqrt(in_f)
    nbo, nbi = (out_f + 127) // 128, (in_f + 127) // 128
    s = torch.empty(nbo, nbi)
    q = torch.empty(out_f, in_f)
    for bo in range(nbo):
        for bi in range(nbi):
            blk = w[bo * 128:(bo + 1) * 128, bi * 128:(bi + 1) * 128]
            sc = blk.abs().max().clamp(min=1e-12) / 448.0
            s[bo, bi] = sc
            q[bo * 128:(bo + 1) * 128, bi * 128:(bi + 1) * 128] = (blk / sc).clamp(-448, 448)
    return q.to(torch.float8_e4m3fn), s.to(F32)


def random_checkpoint(cfg, seed=0, with_mtp=True):
    g = torch.Generator().manual_seed(seed)
    t = {}
    H, V = cfg['hidden_size'], cfg['vocab_size']
    nh, nope, rd, vd = (cfg['num_attention_heads'], cfg['qk_nope_head_dim'],
                        cfg['qk_rope_head_dim'], cfg['v_head_dim'])
    ql, kl = cfg['q_lora_rank'], cfg['kv_lora_rank']
    ih, idim = cfg['index_n_heads'], cfg['index_head_dim']

    def norm_w(n):
        return (1.0 + 0.1 * torch.randn(n, generator=g)).to(BF16)

    def fp8(name, o, i):
        w, s = _fp8_matrix(g, o, i)
        t[name + '.weight'] = w
        t[name + '.weight_scale_inv'] = s

    def mlp(prefix, inter):
        fp8(prefix + 'gate_proj', inter, H)
        fp8(prefix + 'up_proj', inter, H)
        fp8(prefix + 'down_proj', H, inter)

    t['model.embed_tokens.weight'] = torch.randn(V, H, generator=g).to(BF16)
    t['model.norm.weight'] = norm_w(H)
    t['lm_head.weight'] = (torch.randn(V, H, generator=g) / math.sqrt(H)).to(BF16)
    n_layers = cfg['num_hidden_layers'] + (1 if with_mtp else 0)
    for i in range(n_layers):
        p = f'model.layers.{i}.'
        t[p + 'input_layernorm.weight'] = norm_w(H)
        t[p + 'post_attention_layernorm.weight'] = norm_w(H)
        a = p + 'self_attn.'
        fp8(a + 'q_a_proj', ql, H)
        t[a + 'q_a_layernorm.weight'] = norm_w(ql)
        fp8(a + 'q_b_proj', nh * (nope + rd), ql)
        fp8(a + 'kv_a_proj_with_mqa', kl + rd, H)
        t[a + 'kv_a_layernorm.weight'] = norm_w(kl)
        fp8(a + 'kv_b_proj', nh * (nope + vd), kl)
        fp8(a + 'o_proj', H, nh * vd)
        fp8(a + 'indexer.wq_b', ih * idim, ql)
        fp8(a + 'indexer.wk', idim, H)
        t[a + 'indexer.k_norm.weight'] = (1.0 + 0.1 * torch.randn(idim, generator=g)).to(F32)
        t[a + 'indexer.k_norm.bias'] = (0.05 * torch.randn(idim, generator=g)).to(F32)
        t[a + 'indexer.weights_proj.weight'] = (torch.randn(ih, H, generator=g) / math.sqrt(H)).to(BF16)
        m = p + 'mlp.'
        if i < cfg['first_k_dense_replace']:
            mlp(m, cfg['intermediate_size'])
        else:
            E = cfg['n_routed_experts']
            t[m + 'gate.weight'] = (torch.randn(E, H, generator=g) / math.sqrt(H)).to(BF16)
            t[m + 'gate.e_score_correction_bias'] = (0.05 * torch.randn(E, generator=g)).to(F32)
            for e in range(E):
                mlp(m + f'experts.{e}.', cfg['moe_intermediate_size'])
            mlp(m + 'shared_experts.', cfg['moe_intermediate_size'] * cfg.get('n_shared_experts', 1))
    if with_mtp:
        p = f'model.layers.{cfg["num_hidden_layers"]}.'
        t[p + 'enorm.weight'] = norm_w(H)
        t[p + 'hnorm.weight'] = norm_w(H)
        t[p + 'eh_proj.weight'] = (torch.randn(H, 2 * H, generator=g) / math.sqrt(2 * H)).to(BF16)
    return t


def save_checkpoint(out_dir, cfg, tensors):
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'config.json'), 'w') as fh:
        json.dump(cfg, fh, indent=2)
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(out_dir, 'model.safetensors'), metadata={'format': 'pt'})


# ----------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------

def all_fp8_values():
    bits = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).to(F32)
    return bits[~torch.isnan(bits)]


def check_fp8_round():
    vals = all_fp8_values()
    pos = vals[vals >= 0].unique().sort().values
    assert pos.numel() == 127 and pos[-1] == 448.0 and pos[1] == 2.0 ** -9
    # every representable value is a fixed point
    assert torch.equal(R.fp8_round(vals), vals)
    # midpoints between neighbours (ties -> even) and points just off them
    mids = (pos[:-1] + pos[1:]) / 2
    x = torch.cat([mids, mids * (1 + 1e-6), mids * (1 - 1e-6), -mids])
    g = torch.Generator().manual_seed(1)
    x = torch.cat([x, torch.randn(200000, generator=g) * 60, torch.randn(100000, generator=g) * 0.01,
                   (torch.rand(100000, generator=g) - 0.5) * 2 ** -6, torch.tensor([0.0, -0.0, 448.0, -448.0])])
    x = x.clamp(-448, 448)
    mine = R.fp8_round(x)
    theirs = x.to(torch.float8_e4m3fn).to(F32)
    assert torch.equal(mine, theirs), (x[mine != theirs][:5], mine[mine != theirs][:5], theirs[mine != theirs][:5])
    # explicit tie cases: 1 + 1/16 lies between 1 and 1.125 -> even mantissa 1.0
    assert R.fp8_round(torch.tensor([1.0625, 1.1875, 2 ** -10, 3 * 2 ** -10])).tolist() == [1.0, 1.25, 0.0, 2 ** -8]
    print('ok  fp8 RNE == torch float8_e4m3fn cast (%d values)' % x.numel())


def check_ue8m0_act_quant():
    # amax 448 -> scale exactly 1 ; amax 449 -> 2 ; amax 1 -> 2^-8 (1/448 = 2^-8.8 -> next pow2 2^-8)
    s = R.ue8m0_scale(torch.tensor([448.0, 449.0, 1.0, 1e-4, 896.0, 0.5]))
    assert s.tolist() == [1.0, 2.0, 2 ** -8, 2 ** -22, 2.0, 2 ** -9], s.tolist()
    x = torch.zeros(2, 300)
    x[0, 0] = 448.0
    x[0, 1] = 3.3
    x[0, 128] = -10.0      # block 1: amax 10 -> scale 2^-5 (10/448=0.0223 -> 2^-5=0.03125)
    x[0, 256] = 1.0        # partial block 2 (44 wide): amax 1 -> scale 2^-8
    x[0, 257] = 0.3
    # row 1 all zeros -> amax clamped to 1e-4 -> scale 2^-22
    y, s = R.act_quant(x.to(BF16))
    assert s.shape == (2, 3)
    assert s[0].tolist() == [1.0, 2 ** -5, 2 ** -8] and s[1].tolist() == [2 ** -22] * 3, s
    assert y[0, 0] == 448 and y[0, 1] == 3.25 and y[0, 128] == -320 and y[0, 256] == 256
    assert y[0, 257] == R.fp8_round(torch.tensor(0.30078125 * 256))  # bf16(0.3) = 0.30078125
    assert (y[1] == 0).all()
    print('ok  act_quant (ue8m0, partial last block)')


def check_fp8_gemm():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(5, 300, generator=g).to(BF16)
    w8, ws = _fp8_matrix(g, 200, 300)
    lin = R.Fp8Weight(w8, ws)
    y = lin(a)
    ref = torch.nn.functional.linear(R.f32(a), R.f32(lin.dequant()))
    rel = ((R.f32(y) - ref).norm() / ref.norm()).item()
    assert y.dtype == BF16 and y.shape == (5, 200) and rel < 0.08, rel
    # exactness when activations are already fp8-on-grid with scale 1 blocks
    print('ok  fp8_gemm vs dequantised linear, rel err %.3g' % rel)


def check_hadamard():
    h = R.hadamard_matrix(128)
    assert torch.equal(h @ h.t(), 128 * torch.eye(128))
    assert torch.equal(h[:64, :64], h[64:, :64]) and torch.equal(h[64:, 64:], -h[:64, :64])
    assert (h[0] == 1).all() and (h[:, 0] == 1).all()
    x = torch.randn(10, 128).to(BF16)
    y = R.hadamard_rotate(x)
    assert torch.allclose(R.f32(y).norm(dim=-1), R.f32(x).norm(dim=-1), rtol=1e-2)
    e = torch.zeros(1, 128)
    e[0, 0] = 1
    assert torch.allclose(R.f32(R.hadamard_rotate(e.to(BF16))), torch.full((1, 128), 128 ** -0.5).to(BF16).float())
    print('ok  Hadamard (Sylvester, orthonormal after x128^-0.5)')


def check_yarn():
    yc = R.yarn_constants(TINY_CONFIG)
    assert yc['low'] == 10 and yc['high'] == 23, (yc['low'], yc['high'])
    f = yc['freqs']
    assert abs(f[16].item() - 5.5e-3) / 5.5e-3 < 2e-3, f[16].item()
    assert abs(f[23].item() - 3.3338e-5) / 3.3338e-5 < 1e-4, f[23].item()
    assert abs(f[31].item() - 3.3338e-6) / 3.3338e-6 < 1e-4, f[31].item()
    raw = yc['freqs_raw']
    assert torch.equal(f[:11], raw[:11]) and torch.allclose(f[23:], raw[23:] / 40)
    m = yc['m']
    assert abs(m - 1.3688879454) < 1e-9
    scale = 192 ** -0.5 * m * m
    assert abs(scale - 0.13523377886) < 1e-10, scale
    model_scale = (TINY_CONFIG['qk_nope_head_dim'] + TINY_CONFIG['qk_rope_head_dim']) ** -0.5 * m ** 2
    assert abs(model_scale - 0.13523377886) < 1e-10
    print('ok  YaRN: low 10, high 23, f16 %.4g, f23 %.5g, softmax scale %.11f' % (f[16], f[23], scale))


def check_rope():
    cos, sin = R.rope_table(TINY_CONFIG, 8)
    x = torch.randn(8, 2, 64).to(BF16)
    yi = R.rope_interleaved(x, cos, sin)
    yh = R.rope_halfsplit(x, cos, sin)
    # norms preserved; position 0 is identity
    assert torch.equal(yi[0], x[0]) and torch.equal(yh[0], x[0])
    # half-split of a permuted vector == interleaved of the original (same pairs, same angles)
    perm = torch.cat([torch.arange(0, 64, 2), torch.arange(1, 64, 2)])
    assert torch.equal(R.rope_halfsplit(x[..., perm], cos, sin), yi[..., perm])
    print('ok  RoPE interleaved / half-split consistency')


def cos_sim(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def check_decode_vs_prefill(cfg, tensors, n_prompt, n_dec, min_cos_free):
    """Prefill P then decode D one at a time  vs  one-shot prefill of all P+D tokens.
    Free run: decisions (top-k sets, experts) may flip on a random tiny model (spec trap 14),
    so only a loose bound.  Replayed run: the one-shot prefill is forced to the incremental
    run's decisions; then only the rounding paths differ and the logits must agree closely."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, cfg['vocab_size'], (n_prompt + n_dec,), generator=g)
    n_layers = cfg['num_hidden_layers']
    tr = R.Trace()
    inc = R.DSAModel(cfg, tensors, max_seq_len=n_prompt + n_dec)
    steps = [inc.forward(ids[:n_prompt], tr)]
    # the all-positions extension (fixture logits.prefill) does not change the last row
    last_all = R.DSAModel(cfg, tensors, max_seq_len=n_prompt).forward(ids[:n_prompt], all_logits=True)[-1]
    assert torch.allclose(steps[0], last_all, rtol=1e-6, atol=1e-6), (steps[0] - last_all).abs().max()
    for j in range(n_dec):
        steps.append(inc.forward(ids[n_prompt + j:n_prompt + j + 1], tr))
    forced = {}
    for i in range(n_layers):
        for kind in ('topk', 'experts'):
            parts = tr.d.get(f'l{i}.{kind}.prefill', []) + tr.d.get(f'l{i}.{kind}.decode', [])
            if parts:
                forced[f'l{i}.{kind}'] = torch.cat(parts)
    rows = list(range(n_prompt - 1, n_prompt + n_dec))
    free = R.DSAModel(cfg, tensors, max_seq_len=n_prompt + n_dec).forward(ids, all_logits=True)
    tr_rep = R.Trace()
    rep = R.DSAModel(cfg, tensors, max_seq_len=n_prompt + n_dec, forced=forced).forward(ids, tr_rep, all_logits=True)
    sims_free = [cos_sim(a, free[r]) for a, r in zip(steps, rows)]
    sims_rep = [cos_sim(a, rep[r]) for a, r in zip(steps, rows)]
    argmax_rep = sum(int(a.argmax() == rep[r].argmax()) for a, r in zip(steps, rows))
    assert min(sims_free) > min_cos_free, sims_free
    assert min(sims_rep) > 0.99, sims_rep
    print('ok  decode-after-prefill vs one-shot prefill (P=%d, D=%d): cosine free-running min %.4f, '
          'decisions replayed min %.5f (argmax agree %d/%d)'
          % (n_prompt, n_dec, min(sims_free), min(sims_rep), argmax_rep, len(rows)))


def check_layer0_paths(cfg, tensors, n_prompt=20):
    """Layer-0 attention of token P: absorbed decode path (6.2) vs MHA prefill path (6.1).
    Same inputs and (dense regime) same selection: only the rounding paths differ."""
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(0, cfg['vocab_size'], (n_prompt + 1,), generator=g)
    a = R.Trace()
    R.DSAModel(cfg, tensors, n_prompt + 1).forward(ids, a)
    m = R.DSAModel(cfg, tensors, n_prompt + 1)
    m.forward(ids[:n_prompt])
    x = m.V('model.embed_tokens.weight')[ids[n_prompt:]].to(BF16)
    xn, _ = R.rms_norm(x, R.f32(m.V('model.layers.0.input_layernorm.weight')), m.eps)
    b = R.Trace()
    m.attention(0, xn, n_prompt, b, 'prefill')  # tag only selects tracing; S == 1 => decode path
    A, B = a.d['l0.attn_o'][0][n_prompt].float(), b.d['l0.attn_o'][0][0].float()
    rel = ((A - B).norm() / A.norm()).item()
    assert rel < 0.05, rel
    ia = a.d['l0.index_scores.prefill'][0][n_prompt]
    ib = b.d['l0.index_scores.prefill'][0][0]
    assert torch.allclose(ia, ib, rtol=1e-5, atol=1e-5)
    print('ok  layer-0 attention, decode vs prefill path: rel err %.4f; index scores equal' % rel)


def check_batch_invariance(cfg, tensors):
    # prefill logits at position t must not depend on later tokens (causality)
    g = torch.Generator().manual_seed(9)
    ids = torch.randint(0, cfg['vocab_size'], (40,), generator=g)
    a = R.DSAModel(cfg, tensors, 40).forward(ids, all_logits=True)
    b = R.DSAModel(cfg, tensors, 40).forward(ids[:25], all_logits=True)
    assert torch.allclose(a[:25], b, rtol=1e-4, atol=1e-4), (a[:25] - b).abs().max()
    print('ok  causality: prefill prefix logits unchanged by appended tokens')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', default=os.environ.get('DSA_TINY_MODEL'))
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    check_fp8_round()
    check_ue8m0_act_quant()
    check_fp8_gemm()
    check_hadamard()
    check_yarn()
    check_rope()
    if args.model:
        cfg, tensors = R.load_checkpoint(args.model)
        print('model:', args.model)
    else:
        cfg = TINY_CONFIG
        tensors = {k: v for k, v in random_checkpoint(cfg, seed=0).items()}
        print('model: in-memory random tiny checkpoint')
    check_batch_invariance(cfg, tensors)
    check_layer0_paths(cfg, tensors)
    # dense regime (every causal key selected): only rounding paths differ
    check_decode_vs_prefill(cfg, tensors, 20, 4, 0.9)
    # sparse regime (> index_topk keys): selections may legitimately differ (spec trap 14)
    check_decode_vs_prefill(cfg, tensors, 60, 6, 0.5)
    print('all self-checks passed')


if __name__ == '__main__':
    main()
