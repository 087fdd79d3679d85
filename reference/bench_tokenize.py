"""Reference for `crambench bench data`: encode the same texts with the Python `tokenizers`
library and the same tokenizer.json, and report the time.

usage: bench_tokenize.py TOKENIZER_JSON INPUT_JSONL [FIELD]

Prints one JSON object: seconds of `encode_batch` alone (texts already in memory: the
fastest the library can go), seconds end to end (read + parse JSONL + encode_batch),
raw text bytes, token count (with the post-processor's <sep>), and the library version.
Threads: the library's own Rust thread pool (RAYON_NUM_THREADS / all cores).
"""
import json
import sys
import time

import tokenizers
from tokenizers import Tokenizer


def main():
    tok_path, input_path = sys.argv[1], sys.argv[2]
    field = sys.argv[3] if len(sys.argv) > 3 else "text"
    tok = Tokenizer.from_file(tok_path)
    t0 = time.perf_counter()
    texts = []
    with open(input_path, "rb") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)[field])
    t1 = time.perf_counter()
    encs = tok.encode_batch(texts, add_special_tokens=True)
    t2 = time.perf_counter()
    print(json.dumps({
        "encode_seconds": t2 - t1,
        "end_to_end_seconds": t2 - t0,
        "bytes": sum(len(t.encode("utf-8")) for t in texts),
        "tokens": sum(len(e.ids) for e in encs),
        "tokenizers_version": tokenizers.__version__,
    }))


if __name__ == "__main__":
    main()
