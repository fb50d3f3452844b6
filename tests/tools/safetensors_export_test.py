#!/usr/bin/env python3
"""`dropk ckpt export --format safetensors` read by something that is not
dropk: this file parses the safetensors format with the standard library
alone and runs GPT-2 the way Hugging Face's GPT2LMHeadModel does (Conv1D
weights stored (in, out), fused q/k/v, "gelu_new", LayerNorm eps 1e-5, the
LM head tied to wte), from the file's tensors and its metadata's hf_config.

Checks, on a tiny model trained here on the bundled corpus:
  - the header: every tensor's dtype, shape and offsets (contiguous, no gap),
    the metadata (producer, step, the CHAR vocabulary);
  - every token `dropk sample --temperature 0` chooses is the largest logit
    of this independent forward (within 1e-4 of it), which a transposed or
    misnamed weight would break;
  - the bf16 and fp16 exports hold the fp32 export's values rounded (bf16
    to the nearest even, as dropk documents; fp16 through struct's "e");
  - dropk-train's init_from reads the export, and the same weights laid out
    as GPT-2's own model.safetensors, back: a run of 0 steps from either
    prints the trained run's val loss to the last digit.

Usage: safetensors_export_test.py SOURCE_DIR BUILD_DIR
"""
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile

DTYPE_FORMATS = {"F32": ("f", 4), "F16": ("e", 2), "BF16": (None, 2)}


def read_safetensors(path):
    """Returns (metadata, {name: (shape, [float values])}), checking the layout."""
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    assert header_len % 8 == 0, f"header length {header_len} is not a multiple of 8"
    header = json.loads(blob[8:8 + header_len])
    data = blob[8 + header_len:]
    metadata = header.pop("__metadata__")
    tensors, end = {}, 0
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, stop = entry["data_offsets"]
        assert begin == end, f"{name}: starts at {begin}, the previous tensor ended at {end}"
        fmt, size = DTYPE_FORMATS[entry["dtype"]]
        count = math.prod(entry["shape"])
        assert stop - begin == count * size, f"{name}: {stop - begin} bytes for {count} values"
        raw = data[begin:stop]
        if fmt is None:  # bf16: the high half of an fp32
            values = [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
        else:
            values = list(struct.unpack(f"<{count}{fmt}", raw))
        tensors[name] = (entry["shape"], values)
        end = stop
    assert end == len(data), f"{len(data) - end} bytes after the last tensor"
    return metadata, tensors


def matrix(tensors, name):
    shape, values = tensors[name]
    rows, cols = shape
    return [values[r * cols:(r + 1) * cols] for r in range(rows)]


def vec_mat(x, w, b):
    """x (in) times w (in, out), plus b (out): a Hugging Face Conv1D."""
    out = list(b)
    for i, xi in enumerate(x):
        row = w[i]
        for j in range(len(out)):
            out[j] += xi * row[j]
    return out


def layer_norm(x, w, b):
    mean = sum(x) / len(x)
    var = sum((v - mean) ** 2 for v in x) / len(x)
    inv = 1.0 / math.sqrt(var + 1e-5)
    return [(v - mean) * inv * wi + bi for v, wi, bi in zip(x, w, b)]


def gelu_new(x):
    return 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class HfGpt2:
    """GPT2LMHeadModel's forward over one token at a time, with a KV cache."""

    def __init__(self, config, tensors):
        self.c, self.n_head = config["n_embd"], config["n_head"]
        self.t = tensors
        self.wte = matrix(tensors, "transformer.wte.weight")
        self.wpe = matrix(tensors, "transformer.wpe.weight")
        self.layers = []
        for l in range(config["n_layer"]):
            p = f"transformer.h.{l}."
            get = lambda n: tensors[p + n][1]  # noqa: E731
            self.layers.append({
                "ln_1": (get("ln_1.weight"), get("ln_1.bias")),
                "c_attn": (matrix(tensors, p + "attn.c_attn.weight"), get("attn.c_attn.bias")),
                "c_proj": (matrix(tensors, p + "attn.c_proj.weight"), get("attn.c_proj.bias")),
                "ln_2": (get("ln_2.weight"), get("ln_2.bias")),
                "c_fc": (matrix(tensors, p + "mlp.c_fc.weight"), get("mlp.c_fc.bias")),
                "mlp_proj": (matrix(tensors, p + "mlp.c_proj.weight"), get("mlp.c_proj.bias")),
                "keys": [], "values": []})
        self.ln_f = (tensors["transformer.ln_f.weight"][1], tensors["transformer.ln_f.bias"][1])

    def step(self, token):
        """Feeds `token` at the next position; returns the logits after it."""
        pos = len(self.layers[0]["keys"])
        c, nh = self.c, self.n_head
        hd = c // nh
        x = [a + b for a, b in zip(self.wte[token], self.wpe[pos])]
        for layer in self.layers:
            qkv = vec_mat(layer_norm(x, *layer["ln_1"]), *layer["c_attn"])
            q, k, v = qkv[:c], qkv[c:2 * c], qkv[2 * c:]
            layer["keys"].append(k)
            layer["values"].append(v)
            attended = []
            for h in range(nh):
                s = slice(h * hd, (h + 1) * hd)
                scores = [sum(a * b for a, b in zip(q[s], key[s])) / math.sqrt(hd)
                          for key in layer["keys"]]
                top = max(scores)
                weights = [math.exp(z - top) for z in scores]
                total = sum(weights)
                for d in range(hd):
                    attended.append(sum(w * val[s][d] for w, val in zip(weights, layer["values"]))
                                    / total)
            x = [a + b for a, b in zip(x, vec_mat(attended, *layer["c_proj"]))]
            hidden = [gelu_new(v) for v in vec_mat(layer_norm(x, *layer["ln_2"]), *layer["c_fc"])]
            x = [a + b for a, b in zip(x, vec_mat(hidden, *layer["mlp_proj"]))]
        x = layer_norm(x, *self.ln_f)
        return [sum(a * b for a, b in zip(row, x)) for row in self.wte]  # tied LM head


def bf16_round(value):
    (bits,) = struct.unpack("<I", struct.pack("<f", value))
    bits += 0x7FFF + ((bits >> 16) & 1)
    return struct.unpack("<f", struct.pack("<I", (bits >> 16) << 16 & 0xFFFFFFFF))[0]


def write_hub_style(source_path, path, config):
    """Rewrites a dropk export as GPT-2's model.safetensors is laid out: names
    without "transformer.", an attn.bias mask buffer in every block and
    lm_head.weight written out (equal to wte)."""
    with open(source_path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len])
    data = blob[8 + header_len:]
    pieces, entries, offset = [], {}, 0

    def add(name, dtype, shape, raw):
        nonlocal offset
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        pieces.append(raw)
        offset += len(raw)

    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        add(name[len("transformer."):], entry["dtype"], entry["shape"], data[begin:end])
        if name == "transformer.wte.weight":
            add("lm_head.weight", entry["dtype"], entry["shape"], data[begin:end])
    t = config["n_positions"]
    for layer in range(config["n_layer"]):
        mask = b"".join(struct.pack("<f", 1.0 if j <= i else 0.0) for i in range(t) for j in range(t))
        add(f"h.{layer}.attn.bias", "F32", [1, 1, t, t], mask)
    text = json.dumps({"__metadata__": {"format": "pt"}, **entries}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(pieces))


def run(*args, log=False):
    """Runs args, exiting on failure; returns its stdout (with stderr after it, for log=True)."""
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"FAILED: {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
    return result.stdout + result.stderr if log else result.stdout


def main():
    source, build = sys.argv[1], sys.argv[2]
    dropk = os.path.join(build, "bin", "dropk")
    with tempfile.TemporaryDirectory(prefix="dropk_safetensors_") as tmp:
        corpus = os.path.join(source, "data", "tinyshakespeare.txt")
        data, out = os.path.join(tmp, "data"), os.path.join(tmp, "run")
        run(dropk, "data", "prepare", "--tokenizer", "char", "--out", data, corpus)
        trained = run(os.path.join(build, "bin", "dropk-train"), "--config",
                      os.path.join(source, "configs", "tiny_smoke.textproto"),
                      f"--data_dir={data}", f"--out_dir={out}", "--num_threads=1",
                      "--sample_tokens=0", log=True)
        exports = {}
        for dtype in ("fp32", "bf16", "fp16"):
            path = os.path.join(tmp, f"model-{dtype}.safetensors")
            run(dropk, "ckpt", "export", out, "--out", path, "--format", "safetensors",
                "--dtype", dtype)
            exports[dtype] = read_safetensors(path)

        # An export replaces an earlier one of its own, never another file.
        again = os.path.join(tmp, "model-fp32.safetensors")
        run(dropk, "ckpt", "export", out, "--out", again, "--format", "safetensors")
        foreign = os.path.join(tmp, "foreign.safetensors")
        with open(foreign, "wb") as f:
            f.write(open(again, "rb").read().replace(b"dropk ckpt export", b"someone else's!!"))
        before = open(foreign, "rb").read()
        refused = subprocess.run([dropk, "ckpt", "export", out, "--out", foreign, "--format",
                                  "safetensors"], capture_output=True, text=True)
        assert refused.returncode == 2 and "is not a dropk export" in refused.stderr, refused
        assert open(foreign, "rb").read() == before

        metadata, tensors = exports["fp32"]
        assert metadata["producer"] == "dropk ckpt export", metadata
        assert metadata["dropk_step"] == "200", metadata
        config = json.loads(metadata["hf_config"])
        c = config["n_embd"]
        assert (config["n_layer"], config["n_head"], c, config["n_positions"]) == (2, 2, 32, 32)
        with open(corpus, encoding="utf-8") as f:
            vocab = sorted(set(f.read()))  # the CHAR tokenizer: every character seen, sorted
        assert json.loads(metadata["dropk_char_vocab"]) == vocab
        assert config["vocab_size"] == len(vocab)
        assert tensors["transformer.h.1.attn.c_attn.weight"][0] == [c, 3 * c]
        assert tensors["transformer.h.1.mlp.c_fc.weight"][0] == [c, 4 * c]
        assert tensors["transformer.h.1.mlp.c_proj.weight"][0] == [4 * c, c]
        assert "lm_head.weight" not in tensors  # tied to wte, as Transformers saves it
        assert len(tensors) == 2 + 12 * 2 + 2, sorted(tensors)

        for dtype, rounded in (("bf16", bf16_round),
                               ("fp16", lambda v: struct.unpack("<e", struct.pack("<e", v))[0])):
            other = exports[dtype][1]
            assert sorted(other) == sorted(tensors)
            for name, (shape, values) in tensors.items():
                assert other[name][0] == shape, name
                bad = [i for i, (a, b) in enumerate(zip(values, other[name][1])) if rounded(a) != b]
                assert not bad, f"{dtype} {name}: index {bad[0]} is not the fp32 value rounded"

        prompt = "ROMEO:"
        completion = run(dropk, "sample", "--checkpoint", out + "/checkpoints", "--prompt", prompt,
                         "--temperature", "0", "--max-tokens", "24", "--threads", "1")
        completion = completion[:-1]  # dropk sample ends its text with a newline
        assert len(completion) == 24, repr(completion)
        model = HfGpt2(config, tensors)
        ids = [vocab.index(ch) for ch in prompt]
        for token in ids[:-1]:
            model.step(token)
        logits = model.step(ids[-1])
        worst = 0.0
        for position, ch in enumerate(completion):
            chosen = vocab.index(ch)
            gap = max(logits) - logits[chosen]
            worst = max(worst, gap)
            assert gap <= 1e-4, (f"token {position} ({ch!r}): dropk chose a logit {gap:.6f} below "
                                 f"this forward's largest ({vocab[logits.index(max(logits))]!r})")
            logits = model.step(chosen)
        # init_from reads the export back: a run of 0 steps from it evaluates
        # the trained model's val loss to the last digit; so does one from
        # the same weights laid out as GPT-2's own file (no "transformer."
        # prefix, attention mask buffers, the tied LM head written out).
        trained_val = re.search(r"done, 200 steps, val loss (\S+),", trained).group(1)
        hub_style = os.path.join(tmp, "hub-style.safetensors")
        write_hub_style(os.path.join(tmp, "model-fp32.safetensors"), hub_style, config)
        for init_from in ("model-fp32.safetensors", "hub-style.safetensors"):
            log = run(os.path.join(build, "bin", "dropk-train"), "--config",
                      os.path.join(source, "configs", "tiny_smoke.textproto"),
                      f"--data_dir={data}", f"--out_dir={tmp}/from-{init_from}",
                      "--num_threads=1", "--sample_tokens=0", "--max_iters=0",
                      f"--init_from={os.path.join(tmp, init_from)}", log=True)
            assert f"done, 0 steps, val loss {trained_val}," in log, (init_from, trained_val, log)
        refused = subprocess.run(
            [os.path.join(build, "bin", "dropk-train"), "--config",
             os.path.join(source, "configs", "tiny_smoke.textproto"), f"--data_dir={data}",
             f"--out_dir={tmp}/wrong-shape", "--num_threads=1", "--n_layer=3",
             f"--init_from={hub_style}"], capture_output=True, text=True)
        assert refused.returncode == 2 and "n_layer=3" in refused.stderr + refused.stdout, refused

        print(f"safetensors export: {len(tensors)} tensors; the 24 greedy tokens of dropk sample "
              f"({completion!r}) are this forward's largest logits (largest gap {worst:.2e}); "
              f"bf16 and fp16 exports are the fp32 values rounded; init_from reads it back (val loss {trained_val})")


if __name__ == "__main__":
    main()
