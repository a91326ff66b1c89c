#!/usr/bin/env python3
"""Run the Python reference (dsa_ref.py) on a checkpoint and write the golden fixture
described in docs/fixtures.md.

  python3 tests/reference/make_goldens.py --model /tmp/tiny \
      --out tests/fixtures/tiny_golden.safetensors [--prompt-len 260 --decode 8 --seed 1234]
"""

import argparse
import hashlib
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsa_ref  # noqa: E402

F32 = torch.float32
I32 = torch.int32


# layer-0 intermediates whose values are bf16 (docs/fixtures.md list, minus indexer.weights)
BF16_EXACT_L0 = ['l0.attn_norm', 'l0.qr', 'l0.q', 'l0.kv', 'l0.k_pe', 'l0.indexer.q', 'l0.indexer.k',
                 'l0.attn_o', 'l0.attn_out', 'l0.ffn_norm', 'l0.ffn_out', 'l0.residual']


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


_ST_DTYPES = {torch.float32: 'F32', torch.int32: 'I32', torch.bfloat16: 'BF16', torch.float16: 'F16'}


def save_safetensors(tensors, path, metadata):
    """Minimal safetensors writer with a byte-reproducible header (sorted keys; the
    safetensors package orders __metadata__ keys nondeterministically)."""
    header = {'__metadata__': dict(sorted(metadata.items()))}
    blobs, off = [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b''
        header[name] = {'dtype': _ST_DTYPES[t.dtype], 'shape': list(t.shape),
                        'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(',', ':')).encode()
    hb += b' ' * (-len(hb) % 8)
    with open(path, 'wb') as fh:
        fh.write(len(hb).to_bytes(8, 'little'))
        fh.write(hb)
        for raw in blobs:
            fh.write(raw)


def checkpoint_digest(model_dir):
    """sha256 over config.json and every safetensors file (name + per-file sha256, sorted)."""
    files = [os.path.join(model_dir, 'config.json')] + dsa_ref.checkpoint_files(model_dir)
    per_file = {os.path.basename(f): sha256_file(f) for f in files}
    h = hashlib.sha256()
    for name in sorted(per_file):
        h.update(f'{name}:{per_file[name]}\n'.encode())
    return h.hexdigest(), per_file


def make_ids(vocab, n_prompt, n_decode, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n_prompt + n_decode,), generator=g, dtype=torch.int64)
    return ids[:n_prompt], ids[n_prompt:]


def load_replay(path, n_layers):
    """Ids and decisions (top-k sets, routed experts) from a fixture or an engine --dump."""
    from safetensors.torch import load_file
    d = load_file(path)
    forced = {}
    for i in range(n_layers):
        for kind in ('topk', 'experts'):
            parts = [d[k] for k in (f'l{i}.{kind}.prefill', f'l{i}.{kind}.decode') if k in d]
            if parts:
                forced[f'l{i}.{kind}'] = torch.cat(parts).to(torch.int64)
    dec = d.get('decode_ids', torch.zeros(0, dtype=I32))
    return d['prompt_ids'].to(torch.int64), dec.to(torch.int64), forced


def run(model_dir, n_prompt, n_decode, seed, verbose=True, replay=None):
    cfg, tensors = dsa_ref.load_checkpoint(model_dir)
    forced = None
    if replay:
        prompt, decode, forced = load_replay(replay, cfg['num_hidden_layers'])
        n_prompt, n_decode = prompt.numel(), decode.numel()
    else:
        prompt, decode = make_ids(cfg['vocab_size'], n_prompt, n_decode, seed)
    model = dsa_ref.DSAModel(cfg, tensors, max_seq_len=n_prompt + n_decode, forced=forced)

    t0 = time.time()
    tr_p = dsa_ref.Trace(True)
    logits_prefill = model.forward(prompt, tr_p, all_logits=True)
    if verbose:
        print(f'prefill {n_prompt} tokens: {time.time() - t0:.1f}s', flush=True)
    tr_d = dsa_ref.Trace(True)
    logits_decode = []
    for j in range(n_decode):
        logits_decode.append(model.forward(decode[j:j + 1], tr_d))
    if verbose:
        print(f'decode {n_decode} steps: {time.time() - t0:.1f}s total', flush=True)

    out = {
        'prompt_ids': prompt.to(I32),
        'decode_ids': decode.to(I32),
        'logits.prefill': logits_prefill.to(F32),
        'logits.decode': torch.stack(logits_decode).to(F32) if n_decode else torch.zeros(0, cfg['vocab_size']),
    }
    for k, v in tr_p.d.items():
        assert len(v) == 1, k
        out[k] = v[0]
    total = n_prompt + n_decode
    for k, v in tr_d.d.items():
        if '.index_scores.' in k:
            v = [torch.nn.functional.pad(r, (0, total - r.shape[-1]), value=float('-inf')) for r in v]
        out[k] = torch.cat(v, dim=0)
    for k in list(out):
        t = out[k]
        if t.dtype in (torch.int64, torch.int32):
            out[k] = t.to(I32).contiguous()
        else:
            out[k] = t.to(F32).contiguous()
    return cfg, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--prompt-len', type=int, default=260)
    ap.add_argument('--decode', type=int, default=8)
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--replay', metavar='DUMP',
                    help='take prompt/decode ids and the decisions (l{i}.topk.*, l{i}.experts.*) '
                         'from DUMP (an engine --dump or a fixture) instead of choosing them; '
                         'for comparing numbers with decisions replayed (spec trap 14)')
    ap.add_argument('--bf16-intermediates', action='store_true',
                    help='store the bf16-exact l0.* intermediates as BF16 (halves their size; '
                         'NOT the docs/fixtures.md contract, which says F32)')
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    cfg, out = run(args.model, args.prompt_len, args.decode, args.seed, replay=args.replay)
    if args.replay:
        args.prompt_len, args.decode = out['prompt_ids'].numel(), out['decode_ids'].numel()
    if args.bf16_intermediates:
        for k in out:
            if k in BF16_EXACT_L0:
                assert torch.equal(out[k].to(torch.bfloat16).to(F32), out[k]), k
                out[k] = out[k].to(torch.bfloat16)
    digest, per_file = checkpoint_digest(args.model)
    meta = {
        'format': 'dsa-golden-v1',
        'generator': 'tests/reference/make_goldens.py',
        'checkpoint_sha256': digest,
        'checkpoint_files_sha256': json.dumps(per_file, sort_keys=True),
        'config_sha256': per_file['config.json'],
        'torch_version': torch.__version__,
        'prompt_len': str(args.prompt_len),
        'decode_steps': str(args.decode),
        'seed': str(args.seed),
        'index_topk': str(cfg['index_topk']),
        'bf16_intermediates': str(bool(args.bf16_intermediates)),
        'replayed_from': os.path.abspath(args.replay) if args.replay else '',
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_safetensors(out, args.out, meta)
    size = os.path.getsize(args.out)
    print(f'wrote {args.out}: {len(out)} tensors, {size / 1e6:.2f} MB')
    p = out['logits.prefill']
    print('prefill argmax (last 8):', p.argmax(-1)[-8:].tolist())
    print('decode argmax:', out['logits.decode'].argmax(-1).tolist())


if __name__ == '__main__':
    main()
