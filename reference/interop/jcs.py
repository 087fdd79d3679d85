"""Canonicalise JSON with the `rfc8785` package (the RFC 8785 reference used in
provenance-and-anchors.md), independently of crambench.

usage: jcs.py < input.json > canonical-bytes; exit 1 with a message on stderr when rfc8785
refuses the input (NaN, infinities, integers beyond 2^53-1).
"""
import json
import sys

import rfc8785

try:
    value = json.load(sys.stdin)
    sys.stdout.buffer.write(rfc8785.dumps(value))
except Exception as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
