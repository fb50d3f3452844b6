#!/usr/bin/env python3
"""GPT-2's reference encoder (the algorithm of OpenAI's encoder.py, MIT), used
to make the expected token ids in tests/model/gpt2_tokenizer_test.cc.

Usage: tools/gpt2_reference.py [--dir data/gpt2] TEXT...   (prints the ids)
       tools/gpt2_reference.py --cases                      (prints C++ cases)
Needs Python 3 and the `regex` module (Debian: python3-regex)."""
import argparse
import json
import os

import regex

PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Encoder:
    def __init__(self, directory):
        with open(os.path.join(directory, "encoder.json"), encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(os.path.join(directory, "vocab.bpe"), encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().split("\n")[1:-1]]
        self.ranks = dict(zip(merges, range(len(merges))))
        self.byte_encoder = bytes_to_unicode()
        self.cache = {}  # as encoder.py: each distinct piece is merged once

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        result = self.merge(token)
        self.cache[token] = result
        return result

    def merge(self, token):
        word = tuple(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
        return word

    def encode(self, text):
        ids = []
        for piece in PATTERN.findall(text):
            spelt = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(spelt))
        return ids


# Hard text: Unicode letters and numbers, whitespace runs, contractions,
# emoji, and characters at the edges of the regex's classes.
CASES = [
    "Hello, world! First Citizen:",
    "I'm sure you'll see they've done it, haven't they? 'Tis he'd 'LL",
    "Ünïcödé Straße Ελληνικά русский 日本語のテキスト 中文 한국어 العربية",
    "numbers 1234567 ٣٤٥ ½ ² Ⅻ 3.14159 1,000,000",
    "spaces:  two   three    four\t\ttabs\n\n\nnewlines \n \r\n end   ",
    "emoji 🙂👍🏽 👨‍👩‍👧 🇫🇷 and ZWJ",
    "punctuation!!! ... --- ??? $$$ @user #tag <|endoftext|>",
    "mixed\u00a0nbsp\u3000ideographic\u2028line\u0085nel\u000bvt",
    "CamelCaseWords and_snake_case and kebab-case x=1+2*3",
    "   leading and trailing   ",
]


def cpp_string(text):
    """A C++ string literal of text's UTF-8 bytes (octal escapes, which stop
    after three digits, unlike \\x)."""
    out = []
    for b in text.encode("utf-8"):
        c = chr(b)
        if c in "\\\"":
            out.append("\\" + c)
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append("\\%03o" % b)
    return '"' + "".join(out) + '"'


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), "..", "data", "gpt2"))
    parser.add_argument("--cases", action="store_true")
    parser.add_argument("text", nargs="*")
    args = parser.parse_args()
    enc = Encoder(args.dir)
    if args.cases:
        for text in CASES:
            print("    {%s,\n     {%s}}," % (cpp_string(text), ", ".join(map(str, enc.encode(text)))))
        return
    for text in args.text:
        print(enc.encode(text))


if __name__ == "__main__":
    main()
