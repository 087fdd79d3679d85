"""Verify a DSSE envelope with securesystemslib, independently of crambench.

usage: dsse_verify.py ENVELOPE PUBLIC_KEY_PEM
Prints JSON {"verified": bool, "keyid": <securesystemslib's default keyid>, "payload_sha256": …,
"error": …} and exits 0 when verified, 1 otherwise.
"""
import hashlib
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey


def main() -> int:
    env_path, pem_path = sys.argv[1:3]
    with open(pem_path, "rb") as f:
        key = SSlibKey.from_crypto(load_pem_public_key(f.read()))  # default keyid
    with open(env_path) as f:
        env = Envelope.from_dict(json.load(f))
    out = {"keyid": key.keyid, "verified": False, "payload_sha256": None, "error": None}
    try:
        env.verify([key], threshold=1)
        out["verified"] = True
        out["payload_sha256"] = hashlib.sha256(env.payload).hexdigest()
    except Exception as e:  # VerificationError and friends
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))
    return 0 if out["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
