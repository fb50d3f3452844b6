#!/usr/bin/env python3
"""PyTorch's side of bench/gpu_train_bench.cc: the same GPT-2 124M training
step (nanoGPT's model: pre-LayerNorm blocks, tanh GELU, tied head, vocab
50304; fused AdamW, global-norm clipping), eager and torch.compile, at
fp32 / tf32 / bf16 (autocast, fp32 master weights) and dropout 0 and 0.1.
Prints one line per run in the C++ benchmark's format, so the two compare
line by line on the same GPU in the same run.

Usage: python3 bench/torch_gpt2_bench.py [--batch 16] [--steps 10]
           [--precisions fp32,tf32,bf16] [--compile_precisions bf16]
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH, dropout):
        super().__init__()
        self.NH, self.dropout = NH, dropout
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)
        self.drop = nn.Dropout(dropout)

    def attention(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")))


class GPT(nn.Module):
    def __init__(self, V=50304, T=1024, L=12, NH=12, C=768, dropout=0.0):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(C, NH, dropout) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def flops_per_step(model, B, T, L=12, C=768):
    # dropk's Gpt::TrainingFlops: 6 * params * tokens + attention (12 L T C per token).
    n = sum(p.numel() for p in model.parameters())
    return 6.0 * n * B * T + 12.0 * L * C * T * B * T


def run(precision, compiled, dropout, args):
    torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    torch.manual_seed(1337)
    model = GPT(dropout=dropout).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=True)
    step_model = torch.compile(model) if compiled else model
    B, T = args.batch, 1024
    x = torch.randint(0, 50257, (B, T), device="cuda")
    y = torch.randint(0, 50257, (B, T), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(3):  # warm-up (and compilation)
        step()
    torch.cuda.synchronize()
    times = []
    loss = None
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    tflops = flops_per_step(model, B, T) / median / 1e12
    name = ("torch.compile" if compiled else "torch eager") + " " + precision
    print(f"{name:<18} dropout {dropout:.1f} | GPT-2 124M B={B} T={T} | step {median * 1e3:7.1f} ms "
          f"(median of {args.steps}) | {B * T / median:9.0f} tokens/s | {tflops:6.1f} TFLOP/s | "
          f"MFU {100 * tflops / args.peak_tflops:5.1f}% | loss {loss.item():.3f}", flush=True)
    del model, opt, step_model
    torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak_tflops", type=float, default=989.4)
    parser.add_argument("--precisions", default="fp32,tf32,bf16")
    parser.add_argument("--compile_precisions", default="bf16",
                        help="precisions also run under torch.compile (each compiles for a while)")
    args = parser.parse_args()
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    for precision in args.precisions.split(","):
        for dropout in (0.0, 0.1):
            run(precision, False, dropout, args)
    for precision in filter(None, args.compile_precisions.split(",")):
        for dropout in (0.0, 0.1):
            run(precision, True, dropout, args)


if __name__ == "__main__":
    main()
