#!/usr/bin/env python3
"""Make the golden GPT-2 test fixture tests/data/gpt_golden.bin.

This is an independent PyTorch reference for dropk's C++ GPT model. It builds a
tiny GPT-2 from scratch (explicit torch ops, no model library), computes the
forward pass, the mean cross-entropy loss and the gradient of that loss with
respect to every parameter, all in float64, and writes them to a binary file
that the C++ test tests/model/golden_test.cc compares against.

How to run (from the repository root; CI does not need to, the .bin is
committed):

    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3-torch python3-numpy
    /usr/bin/python3 tools/make_golden_fixture.py

Use Debian's /usr/bin/python3 (which sees the apt-installed torch), not some
other python3 on PATH.

Model (GPT-2, dropout 0):
    x = wte[tokens] + wpe[0:T]
    per layer: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))
    logits = ln_f(x) @ wte.T          (LM head tied to wte)
    loss   = mean cross-entropy over all B*T positions

File format (all little-endian, no padding):
    8 bytes  ASCII magic "DKGOLD01"
    7 int32  V, block_size, L, NH, C, B, T
    float32  params[P]          (layout: see PARAM LAYOUT below)
    int32    inputs[B*T]        (row-major (B, T))
    int32    targets[B*T]
    float32  loss               (mean cross-entropy)
    float32  logits[B*T*V]      (row-major (B, T, V))
    float32  grads[P]           (d loss / d params, same layout as params)

PARAM LAYOUT (one flat vector, each tensor row-major, Linear weights stored as
(out_features, in_features) like torch.nn.Linear):
    wte (V, C); wpe (block_size, C);
    for each layer l = 0..L-1:
        ln_1.weight (C), ln_1.bias (C),
        attn.c_attn.weight (3C, C), attn.c_attn.bias (3C),
        attn.c_proj.weight (C, C), attn.c_proj.bias (C),
        ln_2.weight (C), ln_2.bias (C),
        mlp.c_fc.weight (4C, C), mlp.c_fc.bias (4C),
        mlp.c_proj.weight (C, 4C), mlp.c_proj.bias (C);
    ln_f.weight (C), ln_f.bias (C).
"""

import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------
# Sizes. T < block_size on purpose, so the C++ code must slice wpe[0:T].
# --------------------------------------------------------------------------
V = 13           # vocab size
BLOCK_SIZE = 8   # max sequence length (rows of wpe)
L = 2            # n_layer
NH = 2           # n_head
C = 16           # n_embd
B = 2            # batch size
T = 7            # sequence length
HS = C // NH     # head size
LN_EPS = 1e-5
SEED = 1234

MAGIC = b"DKGOLD01"
OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "..", "tests", "data", "gpt_golden.bin")

torch.set_default_dtype(torch.float64)


def param_spec():
    """(name, shape, kind) for every parameter, in file layout order.

    kind selects the initialisation: "mat" (N(0, 0.2^2)), "bias" (N(0, 0.1^2)),
    "ln_w" (1 + 0.1*N(0,1)), "ln_b" (0.1*N(0,1)).
    """
    spec = [("wte", (V, C), "mat"), ("wpe", (BLOCK_SIZE, C), "mat")]
    for l in range(L):
        p = f"h.{l}."
        spec += [
            (p + "ln_1.weight", (C,), "ln_w"),
            (p + "ln_1.bias", (C,), "ln_b"),
            (p + "attn.c_attn.weight", (3 * C, C), "mat"),
            (p + "attn.c_attn.bias", (3 * C,), "bias"),
            (p + "attn.c_proj.weight", (C, C), "mat"),
            (p + "attn.c_proj.bias", (C,), "bias"),
            (p + "ln_2.weight", (C,), "ln_w"),
            (p + "ln_2.bias", (C,), "ln_b"),
            (p + "mlp.c_fc.weight", (4 * C, C), "mat"),
            (p + "mlp.c_fc.bias", (4 * C,), "bias"),
            (p + "mlp.c_proj.weight", (C, 4 * C), "mat"),
            (p + "mlp.c_proj.bias", (C,), "bias"),
        ]
    spec += [("ln_f.weight", (C,), "ln_w"), ("ln_f.bias", (C,), "ln_b")]
    return spec


def init_flat_params(spec):
    """Draw all parameters (in layout order, from the global generator seeded
    with SEED) and return them as one flat float32 tensor."""
    chunks = []
    for _name, shape, kind in spec:
        z = torch.randn(shape, dtype=torch.float32)
        if kind == "mat":
            t = 0.2 * z
        elif kind == "bias":
            t = 0.1 * z
        elif kind == "ln_w":
            t = 1.0 + 0.1 * z
        elif kind == "ln_b":
            t = 0.1 * z
        else:
            raise ValueError(kind)
        chunks.append(t.reshape(-1))
    return torch.cat(chunks).to(torch.float32)


def unflatten(flat, spec):
    """Views into the flat float64 vector, one per parameter, so autograd
    accumulates gradients directly in the flat layout."""
    params, off = {}, 0
    for name, shape, _kind in spec:
        n = math.prod(shape)
        params[name] = flat[off:off + n].view(shape)
        off += n
    assert off == flat.numel()
    return params


def layer_norm(x, w, b):
    """LayerNorm over the last dim, biased variance, eps = 1e-5."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * w + b


def attention(h, p, pre):
    """Causal multi-head self-attention, written out explicitly."""
    Bx, Tx, Cx = h.shape
    qkv = h @ p[pre + "attn.c_attn.weight"].T + p[pre + "attn.c_attn.bias"]
    q, k, v = qkv.split(Cx, dim=-1)  # q first, then k, then v
    # (B, T, C) -> (B, NH, T, HS); head i uses columns i*HS:(i+1)*HS.
    q = q.view(Bx, Tx, NH, HS).transpose(1, 2)
    k = k.view(Bx, Tx, NH, HS).transpose(1, 2)
    v = v.view(Bx, Tx, NH, HS).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
    causal = torch.tril(torch.ones(Tx, Tx, dtype=torch.bool))  # t sees 0..t
    scores = scores.masked_fill(~causal, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    y = probs @ v                                     # (B, NH, T, HS)
    y = y.transpose(1, 2).contiguous().view(Bx, Tx, Cx)  # heads in order
    return y @ p[pre + "attn.c_proj.weight"].T + p[pre + "attn.c_proj.bias"]


def mlp(h, p, pre):
    h = h @ p[pre + "mlp.c_fc.weight"].T + p[pre + "mlp.c_fc.bias"]
    h = F.gelu(h, approximate="tanh")
    return h @ p[pre + "mlp.c_proj.weight"].T + p[pre + "mlp.c_proj.bias"]


def forward(flat, spec, inputs, targets):
    """Returns (logits (B,T,V), mean cross-entropy loss), all float64."""
    p = unflatten(flat, spec)
    Tx = inputs.shape[1]
    x = p["wte"][inputs] + p["wpe"][:Tx]
    for l in range(L):
        pre = f"h.{l}."
        x = x + attention(layer_norm(x, p[pre + "ln_1.weight"],
                                     p[pre + "ln_1.bias"]), p, pre)
        x = x + mlp(layer_norm(x, p[pre + "ln_2.weight"],
                               p[pre + "ln_2.bias"]), p, pre)
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
    logits = x @ p["wte"].T  # tied LM head
    # Mean cross-entropy, written out: logsumexp(logits) - logits[target].
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    loss = (lse - picked).mean()
    return logits, loss


def finite_difference_check(flat64, spec, inputs, targets, grads, n=12):
    """Compare autograd gradients with central differences (float64) for a
    few random parameters; returns the max relative error."""
    g = torch.Generator().manual_seed(SEED + 1)
    idx = torch.randperm(flat64.numel(), generator=g)[:n].tolist()
    idx += [0, flat64.numel() - 1]  # first wte entry, last ln_f.bias entry
    h = 1e-6
    max_rel = 0.0
    with torch.no_grad():
        for i in idx:
            plus = flat64.clone()
            plus[i] += h
            minus = flat64.clone()
            minus[i] -= h
            lp = forward(plus, spec, inputs, targets)[1].item()
            lm = forward(minus, spec, inputs, targets)[1].item()
            num = (lp - lm) / (2 * h)
            ana = grads[i].item()
            rel = abs(num - ana) / max(abs(num), abs(ana), 1e-8)
            max_rel = max(max_rel, rel)
    return max_rel


def main():
    torch.manual_seed(SEED)
    spec = param_spec()

    # Parameter count: closed-form formula vs. the layout.
    P = sum(math.prod(s) for _n, s, _k in spec)
    P_formula = V * C + BLOCK_SIZE * C + L * (12 * C * C + 13 * C) + 2 * C
    assert P == P_formula, (P, P_formula)

    # Draw float32 params first, then tokens, from the same global generator.
    params32 = init_flat_params(spec)
    assert params32.numel() == P
    inputs = torch.randint(0, V, (B, T), dtype=torch.int64)
    targets = torch.randint(0, V, (B, T), dtype=torch.int64)

    # Compute in float64 from exactly the float32 values.
    flat64 = params32.to(torch.float64).requires_grad_(True)
    logits, loss = forward(flat64, spec, inputs, targets)
    loss.backward()
    grads = flat64.grad.detach().clone()

    # Cross-check the hand-written loss against torch's cross_entropy.
    ref = F.cross_entropy(logits.detach().view(-1, V), targets.view(-1))
    assert abs(ref.item() - loss.item()) < 1e-12

    max_rel = finite_difference_check(flat64.detach(), spec, inputs, targets,
                                      grads)
    print(f"finite-difference check: max relative error = {max_rel:.3e}")
    assert max_rel < 1e-5, max_rel

    # Write the fixture.
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<7i", V, BLOCK_SIZE, L, NH, C, B, T))
        f.write(params32.numpy().astype("<f4").tobytes())
        f.write(inputs.numpy().astype("<i4").tobytes())
        f.write(targets.numpy().astype("<i4").tobytes())
        f.write(struct.pack("<f", loss.item()))
        f.write(logits.detach().numpy().astype("<f4").tobytes())
        f.write(grads.numpy().astype("<f4").tobytes())

    size = os.path.getsize(OUT_PATH)
    expected = 8 + 7 * 4 + 4 * P + 2 * 4 * B * T + 4 + 4 * B * T * V + 4 * P
    assert size == expected, (size, expected)

    logits_flat = logits.detach().reshape(-1)
    print(f"torch {torch.__version__}")
    print(f"P = {P}")
    print(f"loss = {loss.item():.10f}")
    print("first 5 logits =", [f"{v:.8f}" for v in logits_flat[:5].tolist()])
    print(f"wrote {os.path.normpath(OUT_PATH)} ({size} bytes)")


if __name__ == "__main__":
    main()
