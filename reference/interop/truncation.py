"""Pair truncation by Hugging Face `tokenizers` (Python), independently of crambench.

Upstream cramming tokenizes GLUE pairs with `tokenizer(a, b, max_length=128, truncation=True)`
(`cramming/data/downstream_task_preparation.py`, JonasGeiping/cramming 196c991), i.e. the
`longest_first` strategy of `tokenizers`, with the template's three special tokens counted in
`max_length`.

Both segments are encoded in full and then cut by `Tokenizer.post_process` (truncation, then the
template), which runs `tokenizers`' `truncate_encodings`. `Tokenizer.encode(a, b)` with
truncation enabled is not used: since huggingface/tokenizers PR #1990 (2026, tokenizers 0.23)
it stops tokenizing each segment at `max_length` tokens before the pair is cut, which changes
the cut when the shorter segment alone has `max_length` tokens or more (e.g. 200 + 190 tokens at
max_length 128: 62 + 63 instead of 63 + 62). Upstream's runs (2022-2023 tokenizers) had no such
early exit.

usage:
  truncation.py lengths SEED COUNT
      COUNT random (len_a, len_b, max_length) triples (Python's `random`, seeded); for each prints
      `len_a len_b max_length kept_a kept_b`, where kept_* are the segments' lengths after
      `enable_truncation(max_length)` with a `[CLS] $A [SEP] $B [SEP]` template.
  truncation.py pairs TOKENIZER_JSON MAX_LENGTH < pairs.jsonl
      for each JSON line `[a, b]` prints the ids (space-separated) of the pair cut to
      MAX_LENGTH, using TOKENIZER_JSON's own pipeline and post-processor.
"""
import json
import random
import sys

from tokenizers import Tokenizer, models, pre_tokenizers, processors


def cut(tok, a, b, max_length):
    """Encode a and b in full, then truncate the pair to max_length and apply the template."""
    tok.no_truncation()
    ea = tok.encode(a, add_special_tokens=False)
    eb = tok.encode(b, add_special_tokens=False)
    tok.enable_truncation(max_length=max_length)
    return tok.post_process(ea, eb, add_special_tokens=True)


def lengths(seed, count):
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3, "b": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        # Mostly the regime of GLUE pairs near the 128-token limit, plus the short cases.
        max_length = rng.choice([4, 5, 6, 7, 8, 16, 31, 64, 127, 128, 129, rng.randint(4, 300)])
        na = rng.randint(0, 2 * max_length)
        nb = rng.randint(0, 2 * max_length)
        enc = cut(tok, " ".join(["a"] * na), " ".join(["b"] * nb), max_length)
        out.append(f"{na} {nb} {max_length} {enc.ids.count(3)} {enc.ids.count(4)}")
    print("\n".join(out))


def pairs(path, max_length):
    tok = Tokenizer.from_file(path)
    tok.no_padding()
    for line in sys.stdin:
        a, b = json.loads(line)
        print(" ".join(str(i) for i in cut(tok, a, b, max_length).ids))


if __name__ == "__main__":
    if sys.argv[1] == "lengths":
        lengths(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "pairs":
        pairs(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
