#!/usr/bin/env python3
"""PyTorch's side of bench/vs_pytorch.sh's serving case: batched decode of
dropk's GPT (bench/torch_gpt_cpu.py's model, random weights: speed does not
depend on them) on the CPU, step for step as bench/serve_bench.cc's batched
decode table runs dropk's inference engine:

  R rows, each given a 4-token prompt, then one untimed decode step, then
  `steps` timed decode steps (40 for R <= 4, else 16), every step computing
  the next position's logits over the whole vocabulary for all R rows.

Two ways a PyTorch user decodes:
  kv         a key/value cache per layer (what HuggingFace's GPT-2 does):
             each step runs one position per row through the model.
  recompute  nanoGPT's generate(): each step runs the whole sequence so far
             through the model and keeps the last position's logits.

fp32 (or, with --dtype bf16, the model and caches in bf16, as a PyTorch user
serves bf16 weights: model.to(torch.bfloat16)), torch.inference_mode(),
--threads intra-op threads. Prints one line per R: "RESULT decode mode=kv
rows=R tokens_per_s=X". --check instead compares the KV-cache decode's
logits with the full forward's over the first positions of 3 rows and exits
1 past 1e-4 (fp32 only).

Usage: /usr/bin/python3 bench/torch_decode_cpu.py --model small|gpt2 \\
           --mode kv|recompute --threads 2 [--rows 1,4,16,64] [--dtype fp32|bf16]
           [--check]
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt_cpu import GPT  # noqa: E402  (dropk's model, one definition)

# bench/serve_bench.cc's shapes: (vocab, context, layers, heads, channels).
SHAPES = {"small": (256, 256, 6, 6, 384), "gpt2": (50257, 1024, 12, 12, 768)}
PROMPT_TOKENS = 4


def decode_step_kv(model, tokens, pos, caches):
    """Logits (R, V) of `tokens` (R,) at position `pos`, appending each
    layer's keys and values at `pos` to caches[l] = (k, v), each (R, NH, T, hs)."""
    x = model.wte(tokens) + model.wpe.weight[pos]  # (R, C)
    R, C = x.shape
    for block, (kc, vc) in zip(model.blocks, caches):
        attn = block.attn
        hs = C // attn.NH
        q, k, v = attn.c_attn(block.ln_1(x)).split(C, dim=1)
        kc[:, :, pos] = k.view(R, attn.NH, hs)
        vc[:, :, pos] = v.view(R, attn.NH, hs)
        q = q.view(R, attn.NH, 1, hs)
        scores = (q @ kc[:, :, :pos + 1].transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        y = F.softmax(scores, dim=-1) @ vc[:, :, :pos + 1]  # (R, NH, 1, hs)
        x = x + attn.c_proj(y.reshape(R, C))
        x = x + block.c_proj(F.gelu(block.c_fc(block.ln_2(x)), approximate="tanh"))
    return F.linear(model.ln_f(x), model.wte.weight)


def logits_recompute(model, idx):
    """Logits (R, V) of the last position of `idx` (R, t): nanoGPT's forward
    without targets, which runs every position and keeps the last."""
    x = model.wte(idx) + model.wpe(torch.arange(idx.shape[1]))
    for block in model.blocks:
        x = block(x)
    return F.linear(model.ln_f(x[:, -1, :]), model.wte.weight)


def tokens_per_s(model, shape, mode, rows, dtype=torch.float32):
    V, T, L, NH, C = shape
    steps = 40 if rows <= 4 else 16
    first = torch.arange(rows) % 200 + 1
    prompt = torch.stack([first] + [torch.full((rows,), t) for t in (7, 9, 11)], dim=1)
    if mode == "kv":
        caches = [(torch.zeros(rows, NH, T, C // NH, dtype=dtype),
                   torch.zeros(rows, NH, T, C // NH, dtype=dtype)) for _ in range(L)]
        for pos in range(PROMPT_TOKENS):
            decode_step_kv(model, prompt[:, pos], pos, caches)
        decode_step_kv(model, first, PROMPT_TOKENS, caches)  # untimed, as serve_bench's warm-up
        start = time.perf_counter()
        for i in range(steps):
            decode_step_kv(model, first, PROMPT_TOKENS + 1 + i, caches)
        return rows * steps / (time.perf_counter() - start)
    idx = torch.cat([prompt, first[:, None]], dim=1)
    logits_recompute(model, idx)  # untimed
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.cat([idx, first[:, None]], dim=1)
        logits_recompute(model, idx)
    return rows * steps / (time.perf_counter() - start)


def check(model, shape, positions=12, rows=3):
    """The largest |KV-cache logits - full-forward logits| over `positions`."""
    V, T, L, NH, C = shape
    idx = torch.randint(0, V, (rows, positions))
    caches = [(torch.zeros(rows, NH, T, C // NH), torch.zeros(rows, NH, T, C // NH))
              for _ in range(L)]
    worst = 0.0
    for pos in range(positions):
        kv = decode_step_kv(model, idx[:, pos], pos, caches)
        full = logits_recompute(model, idx[:, :pos + 1])
        worst = max(worst, (kv - full).abs().max().item())
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="small")
    parser.add_argument("--mode", choices=["kv", "recompute"], default="kv")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default="1,4,16,64")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--check", action="store_true",
                        help="compare the KV-cache decode with the full forward, then exit")
    args = parser.parse_args()
    if args.threads < 1:
        sys.exit(f"torch_decode_cpu: --threads {args.threads}: must be at least 1")
    try:
        rows = [int(r) for r in args.rows.split(",")]
    except ValueError:
        sys.exit(f"torch_decode_cpu: --rows {args.rows}: expected numbers separated by commas")
    if any(r < 1 for r in rows):
        sys.exit(f"torch_decode_cpu: --rows {args.rows}: every count must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    V, T, L, NH, C = SHAPES[args.model]
    model = GPT(V, T, L, NH, C, dropout=0.0).eval()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if args.check and args.dtype != "fp32":
        sys.exit("torch_decode_cpu: --check compares fp32 logits; drop --dtype bf16")
    model = model.to(dtype)
    with torch.inference_mode():
        if args.check:
            worst = check(model, SHAPES[args.model])
            ok = worst <= 1e-4
            print(f"RESULT check kv vs full forward: max |difference| {worst:.2e} "
                  f"({'ok' if ok else 'FAILED, bound 1e-4'})")
            sys.exit(0 if ok else 1)
        for r in rows:
            tps = tokens_per_s(model, SHAPES[args.model], args.mode, r, dtype)
            print(f"RESULT decode mode={args.mode} rows={r} tokens_per_s={tps:.1f}", flush=True)


if __name__ == "__main__":
    main()
