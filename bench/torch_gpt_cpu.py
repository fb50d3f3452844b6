#!/usr/bin/env python3
"""PyTorch's side of bench/vs_pytorch.sh: dropk's GPT and training recipe in
plain PyTorch on the CPU, so the two run side by side on the same machine.

The model is dropk's (model/gpt.cc): GPT-2 style, learned positions,
pre-LayerNorm blocks (eps 1e-5), tanh GELU, biases everywhere, the LM head
tied to the token embedding, causal attention written out (torch 1.13 has no
scaled_dot_product_attention), dropout after the embeddings, on the attention
probabilities and on both residual outputs. The recipe is dropk-train's:
AdamW (eps 1e-8) with decoupled weight decay on 2-D tensors only
(trainer/optimizer.cc, model/param_layout.cc), linear warmup then cosine to
min_lr (trainer/schedule.cc), global gradient-norm clipping, and evaluation
every eval_interval steps and after the last one (trainer/trainer.cc).

Two modes:
  train       the recipe on dropk's token files (data_dir/train.bin, val.bin);
              prints "RESULT train wall_s=... val_loss=...".
  throughput  a fixed synthetic batch, like bench/train_throughput_bench.cc:
              warm-up steps, then timed steps; prints "RESULT throughput
              tokens_per_s=... step_ms=..." (median step).
Precision fp32, or bf16 under torch.autocast('cpu') with fp32 master
weights. Data-parallel with DistributedDataParallel over gloo when started as
several processes with RANK and WORLD_SIZE set and --dist_file naming a
not-yet-existing file on a shared filesystem (a FileStore rendezvous).

Usage: /usr/bin/python3 bench/torch_gpt_cpu.py --mode train --threads 2 \\
           --data_dir data/shakespeare_char --iters 2000
       RANK=r WORLD_SIZE=2 /usr/bin/python3 bench/torch_gpt_cpu.py \\
           --mode throughput --threads 1 --dist_file /tmp/x ...
"""
import argparse
import math
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

# trainer/token_file.h: magic, version, vocab size, token width, reserved,
# token count (little endian), then the tokens, `width` bytes each.
TOKEN_MAGIC = b"DROPKTOK"
TOKEN_HEADER = struct.Struct("<8sIIIIQ")


def read_tokens(path):
    """Returns (tokens as a read-only numpy array, vocab size) of a dropk token file."""
    with open(path, "rb") as f:
        magic, version, vocab, width, _, count = TOKEN_HEADER.unpack(f.read(TOKEN_HEADER.size))
    if magic != TOKEN_MAGIC or version != 1:
        sys.exit(f"torch_gpt_cpu: {path}: not a dropk token file (version 1)")
    dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32}.get(width)
    if dtype is None:
        sys.exit(f"torch_gpt_cpu: {path}: token width {width} is not 1, 2 or 4")
    tokens = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r",
                       offset=TOKEN_HEADER.size, shape=(count,))
    return tokens, vocab


class CausalSelfAttention(nn.Module):
    def __init__(self, C, NH, T, dropout):
        super().__init__()
        self.NH = NH
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.probs_drop = nn.Dropout(dropout)
        self.out_drop = nn.Dropout(dropout)
        # Additive mask: 0 on and below the diagonal, -inf above.
        self.register_buffer("mask", torch.full((T, T), float("-inf")).triu(1), persistent=False)

    def forward(self, x):  # x is (B,T,C)
        B, T, C = x.shape
        hs = C // self.NH
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, hs).transpose(1, 2) for t in (q, k, v))  # (B,NH,T,hs)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs)) + self.mask[:T, :T]
        probs = self.probs_drop(F.softmax(scores, dim=-1))  # (B,NH,T,T)
        y = (probs @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.out_drop(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, C, NH, T, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.attn = CausalSelfAttention(C, NH, T, dropout)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.c_proj = nn.Linear(4 * C, C)
        self.mlp_drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        h = F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")
        return x + self.mlp_drop(self.c_proj(h))


class GPT(nn.Module):
    def __init__(self, V, T, L, NH, C, dropout):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(C, NH, T, dropout) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, eps=1e-5)
        # Gpt::InitWeights: N(0, 0.02) matrices, residual projections
        # N(0, 0.02/sqrt(2L)), zero biases, LayerNorm gain 1.
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):  # idx and targets are (B,T)
        T = idx.shape[1]
        x = self.emb_drop(self.wte(idx) + self.wpe(torch.arange(T)))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head, (B,T,V)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


def make_optimizer(model, args):
    # Decay matrices only, as dropk's ParamLayout marks them (wte and wpe
    # included; biases and LayerNorm parameters not).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8)


def lr_at(step, args):
    """trainer/schedule.cc LearningRateAt."""
    if step < args.warmup:
        return args.lr * (step + 1) / (args.warmup + 1)
    if step > args.lr_decay_iters or args.lr_decay_iters <= args.warmup:
        return args.min_lr
    ratio = (step - args.warmup) / (args.lr_decay_iters - args.warmup)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (args.lr - args.min_lr)


class Batches:
    """Random windows of a token file, nanoGPT's way; each rank draws its own."""

    def __init__(self, tokens, B, T, seed):
        self.tokens, self.B, self.T = tokens, B, T
        self.rng = np.random.default_rng(seed)

    def next(self):
        starts = self.rng.integers(0, len(self.tokens) - self.T - 1, size=self.B)
        x = np.stack([self.tokens[s:s + self.T] for s in starts]).astype(np.int64)
        y = np.stack([self.tokens[s + 1:s + 1 + self.T] for s in starts]).astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)


class Runner:
    """One rank's model, optimizer and training step."""

    def __init__(self, args, V):
        torch.manual_seed(args.seed)  # the same initial parameters on every rank
        self.args = args
        self.model = GPT(V, args.block_size, args.n_layer, args.n_head, args.n_embd, args.dropout)
        self.opt = make_optimizer(self.model, args)
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.step_model = (nn.parallel.DistributedDataParallel(self.model) if self.world > 1
                           else self.model)
        torch.manual_seed(args.seed + 1000 + self.rank)  # dropout masks differ per rank
        self.bf16 = args.precision == "bf16"

    def loss(self, model, x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return model(x, y)

    def train_step(self, x, y, lr):
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.step_model, x, y)
        loss.backward()  # DDP averages the gradients over ranks here
        if self.args.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)
        self.opt.step()
        return loss

    @torch.no_grad()
    def evaluate(self, batches):
        self.model.eval()
        total = sum(self.loss(self.model, *batches.next()).item() for _ in range(self.args.eval_iters))
        self.model.train()
        mean = torch.tensor([total / self.args.eval_iters], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(mean)
            mean /= self.world
        return mean.item()


def run_train(args):
    start = time.perf_counter()
    train, V = read_tokens(os.path.join(args.data_dir, "train.bin"))
    val, _ = read_tokens(os.path.join(args.data_dir, "val.bin"))
    runner = Runner(args, V)
    B, T, rank = args.batch_size, args.block_size, runner.rank
    train_batches = Batches(train, B, T, args.seed * 7919 + rank)
    eval_train = Batches(train, B, T, args.seed * 7919 + 1000 + rank)
    eval_val = Batches(val, B, T, args.seed * 7919 + 2000 + rank)
    val_loss = float("nan")
    for step in range(args.iters + 1):
        if step % args.eval_interval == 0 or step == args.iters:
            train_loss = runner.evaluate(eval_train)
            val_loss = runner.evaluate(eval_val)
            if rank == 0:
                print(f"step {step}/{args.iters} | eval train {train_loss:.4f} val {val_loss:.4f} | "
                      f"{time.perf_counter() - start:.1f}s elapsed", flush=True)
        if step == args.iters:
            break
        runner.train_step(*train_batches.next(), lr_at(step, args))
    if rank == 0:
        print(f"RESULT train wall_s={time.perf_counter() - start:.3f} val_loss={val_loss:.5f}",
              flush=True)


def run_throughput(args):
    runner = Runner(args, args.vocab_size)
    B, T, V = args.batch_size, args.block_size, args.vocab_size
    # Throughput does not depend on the text: one fixed synthetic batch, as
    # bench/train_throughput_bench.cc uses.
    gen = torch.Generator().manual_seed(args.seed + runner.rank)
    x = torch.randint(0, V, (B, T), generator=gen)
    y = torch.randint(0, V, (B, T), generator=gen)
    for _ in range(args.warmup_steps):
        runner.train_step(x, y, 1e-4)
    times = []
    for _ in range(args.steps):
        if runner.world > 1:
            dist.barrier()  # start every step together, so a step's time is the job's
        t0 = time.perf_counter()
        loss = runner.train_step(x, y, 1e-4)
        times.append(time.perf_counter() - t0)
    # The job's step is its slowest rank's.
    median = torch.tensor([statistics.median(times)], dtype=torch.float64)
    if runner.world > 1:
        dist.all_reduce(median, op=dist.ReduceOp.MAX)
    median = median.item()
    if runner.rank == 0:
        print(f"torch {args.precision} {runner.world} rank(s) x {torch.get_num_threads()} thread(s) | "
              f"B={B} T={T} L={args.n_layer} C={args.n_embd} V={V} dropout {args.dropout:.2f} | "
              f"step {median * 1e3:.1f} ms (median of {args.steps}) | loss {loss.item():.3f}",
              flush=True)
        print(f"RESULT throughput tokens_per_s={runner.world * B * T / median:.1f} "
              f"step_ms={median * 1e3:.2f}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["train", "throughput"], required=True)
    p.add_argument("--threads", type=int, required=True, help="torch.set_num_threads per rank")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--dist_file", default="", help="FileStore path for DDP (RANK, WORLD_SIZE set)")
    p.add_argument("--data_dir", default="data/shakespeare_char")
    p.add_argument("--vocab_size", type=int, default=256, help="throughput mode only")
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=128)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=12, help="per rank")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min_lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--lr_decay_iters", type=int, default=2000)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.99)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--grad_clip", type=float, default=1.0)
    p.add_argument("--eval_interval", type=int, default=250)
    p.add_argument("--eval_iters", type=int, default=20)
    p.add_argument("--warmup_steps", type=int, default=3, help="throughput mode: untimed steps")
    p.add_argument("--steps", type=int, default=10, help="throughput mode: timed steps")
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if not args.dist_file:
            sys.exit("torch_gpt_cpu: WORLD_SIZE > 1 needs --dist_file")
        dist.init_process_group("gloo", init_method=f"file://{args.dist_file}",
                                rank=int(os.environ["RANK"]), world_size=world)
    if args.mode == "train":
        run_train(args)
    else:
        run_throughput(args)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
