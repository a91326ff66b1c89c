#!/usr/bin/env python3
"""Independent PyTorch reference of the indexer's KL loss (docs/dsa_conversion.md §1).

Written from docs/dsa_conversion.md and the spec (dsa-v32.md §7, §14), on top of train_ref.py's
fp64 straight-through training forward. Per layer and query row t, over the keys its attention
ran over (every causal key with dense attention, the indexer's top-k set with sparse attention):
target p_t = the attention probabilities summed over heads, L1-normalised (no gradient);
prediction softmax(I_t) of the indexer's logits, computed differentiably from its parameters
(wq_b, wk, k_norm, weights_proj) with every rounding point straight through, and its inputs
(qr, the attn_norm output) detached; loss = Σ_layers mean_t KL(p_t ‖ softmax(I_t)).

  python3 tests/reference/indexer_kl_ref.py --model /tmp/micro --out tests/fixtures/indexer_kl.safetensors

Writes the batch, per case (dense, sparse) each layer's mean KL (metadata), the gradients of
every indexer tensor (F16 with a per-tensor exponent, as train_ref.py) and the decisions.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsa_ref as R  # noqa: E402
import train_ref as TR  # noqa: E402
from make_goldens import checkpoint_digest, save_safetensors  # noqa: E402

F64 = TR.F64
bf, aq = TR.bf, TR.aq


class KlRef(TR.TrainRef):
    def __init__(self, cfg, params, dense, max_pos):
        super().__init__(cfg, params, dense, max_pos)
        self.seen = {}
        self.H = R.hadamard_matrix(self.id).to(F64) * (self.id ** -0.5)

    def on_attention(self, i, x, qr, prob, sel):
        self.seen[i] = (x.detach(), qr.detach(), prob.detach(), sel)

    def rope_half(self, x, T):
        """Half-split RoPE on dims 0..rd-1 of the last dim (the indexer's), bf16 out."""
        h = self.rd // 2
        shape = (T,) + (1,) * (x.dim() - 2) + (h,)
        c = self.cos[:T].to(F64).reshape(shape)
        s = self.sin[:T].to(F64).reshape(shape)
        a, b = x[..., :h], x[..., h:self.rd]
        return torch.cat([bf(a * c - b * s), bf(a * s + b * c), x[..., self.rd:]], dim=-1)

    def indexer_logits(self, i, x, qr, T):
        p = f'model.layers.{i}.self_attn.indexer.'
        q = self.lin(p + 'wq_b', qr).reshape(T, self.ih, self.id)
        q = bf(self.rope_half(q, T) @ self.H.t())
        k = self.lin(p + 'wk', x)
        mu = k.mean(dim=-1, keepdim=True)
        var = ((k - mu) ** 2).mean(dim=-1, keepdim=True)
        k = bf((k - mu) * torch.rsqrt(var + 1e-6) * self.P.w(p + 'k_norm.weight') + self.P.w(p + 'k_norm.bias'))
        k = bf(self.rope_half(k, T) @ self.H.t())
        qa, ka = aq(q), aq(k)
        w = x @ self.P.w(p + 'weights_proj.weight').t()  # fp32 weights_proj on fp32 x (bf16 values)
        dots = torch.einsum('thd,sd->tsh', qa, ka)
        return (dots.clamp(min=0) * w[:, None, :]).sum(dim=-1) * (self.ih ** -0.5 * self.id ** -0.5)

    def layer_kl(self, i, T):
        x, qr, prob, sel = self.seen[i]
        I = self.indexer_logits(i, x, qr, T)
        if sel is None:
            keep = torch.ones(T, T, dtype=torch.bool).tril()
        else:
            keep = torch.zeros(T, T, dtype=torch.bool)
            v = sel >= 0
            keep[v.nonzero()[:, 0], sel[v]] = True
        pt = prob.sum(dim=1) * keep
        pt = pt / pt.sum(dim=-1, keepdim=True)
        lq = torch.log_softmax(I.masked_fill(~keep, float('-inf')), dim=-1)
        terms = torch.where(pt > 0, pt * (torch.log(pt.clamp(min=1e-300)) - lq), torch.zeros_like(pt))
        return terms.sum(dim=-1)  # [T]


def run_case(cfg, params, tokens, dense):
    params.begin()
    B, T = tokens.shape[0], tokens.shape[1] - 1
    ref = KlRef(cfg, params, dense, T)
    decisions = [{'topk': {}, 'experts': {}} for _ in range(B)]
    per_layer = [0.0] * ref.n
    total = torch.zeros((), dtype=F64)
    for b in range(B):
        ref.seen = {}
        with torch.no_grad():
            ref.sequence(tokens[b], decisions[b], False)
        for i in range(ref.n):
            kl = ref.layer_kl(i, T)
            per_layer[i] += float(kl.detach().sum()) / (B * T)
            total = total + kl.sum() / (B * T)
    total.backward()
    names = sorted(k for k in params.leaf if '.indexer.' in k)
    grads = {k: params.leaf[k].grad if params.leaf[k].grad is not None else torch.zeros_like(params.leaf[k])
             for k in names}
    return ref, per_layer, grads, decisions, names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--seq-len', type=int, default=20)
    ap.add_argument('--seed', type=int, default=4321)
    a = ap.parse_args()
    t0 = time.time()
    cfg, tensors = TR.load_all(a.model)
    params = TR.Params(cfg, tensors)
    B, T = a.batch, a.seq_len
    g = torch.Generator().manual_seed(a.seed)
    tokens = torch.randint(0, cfg['vocab_size'], (B, T + 1), generator=g)
    out = {'tokens': tokens.to(TR.I32)}
    meta = {}
    for case, dense in (('dense', True), ('sparse', False)):
        ref, per_layer, grads, dec, names = run_case(cfg, params, tokens, dense)
        out.update(TR.grad_tensors(f'{case}.', grads, names))
        out.update(TR.decision_tensors(f'{case}.', ref, dec, False, B, T))
        meta[f'{case}.layer_kl'] = json.dumps(per_layer)
        print(f'[indexer_kl_ref] {case}: KL per layer {per_layer}')
    digest, per_file = checkpoint_digest(a.model)
    meta.update({'checkpoint_sha256': digest, 'checkpoint_files_sha256': json.dumps(per_file, sort_keys=True),
                 'torch_version': torch.__version__, 'batch': str(B), 'seq_len': str(T), 'seed': str(a.seed)})
    save_safetensors(out, a.out, meta)
    print(f'[indexer_kl_ref] {os.path.getsize(a.out) / 1e6:.2f} MB in {time.time() - t0:.1f} s')


if __name__ == '__main__':
    main()
