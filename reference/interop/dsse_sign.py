"""Sign a payload into a DSSE envelope with securesystemslib, independently of crambench.

usage: dsse_sign.py PAYLOAD_FILE PAYLOAD_TYPE OUT_DIR [ed25519|ecdsa]
Writes OUT_DIR/envelope.json and OUT_DIR/key.pub (SubjectPublicKeyInfo PEM) of a fresh Ed25519
(default) or ECDSA P-256 (scheme ecdsa-sha2-nistp256) key, and prints the key's securesystemslib
keyid.
"""
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner


def main() -> int:
    payload_path, payload_type, out_dir = sys.argv[1:4]
    algorithm = sys.argv[4] if len(sys.argv) > 4 else "ed25519"
    if algorithm == "ecdsa":
        signer = CryptoSigner.generate_ecdsa()
    else:
        signer = CryptoSigner.generate_ed25519()
    with open(payload_path, "rb") as f:
        payload = f.read()
    env = Envelope(payload, payload_type, {})
    env.sign(signer)
    with open(os.path.join(out_dir, "envelope.json"), "w") as f:
        json.dump(env.to_dict(), f)
    pem = signer._private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with open(os.path.join(out_dir, "key.pub"), "wb") as f:
        f.write(pem)
    print(signer.public_key.keyid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
