#!/usr/bin/env python3
"""Verify a Quire signed manifest, and a folder against it, independently of Quire.

Written from docs/SIGNING.md alone, with the standard library and `cryptography`: rebuilds the
signed bytes from the manifest's fields, checks the Ed25519 signature with a trusted key, then
(with --folder) that every listed page is in the folder with its size and SHA-256. A version 2
manifest carries an RFC 3161 time-stamp token over SHA-256(signature); with --tsa-ca it is
checked by OpenSSL's own verifier (`openssl ts -verify`) against that trusted TSA certificate.

    verify_manifest.py MANIFEST.json (--public-key sign-N=HEX | --keys EXPORT.json)
                       [--folder DIR] [--tsa-ca TSA.pem]

Prints a summary and exits 0, or names the first problem and exits 1.
"""

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CONTEXT = b"quire signed manifest v1\0"


class Bad(Exception):
    pass


def text(value):
    data = value.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def signed_bytes(m):
    out = CONTEXT + text(m["tenant"]) + text(m["job_id"])
    out += struct.pack(">Q", m["committed_unix_ms"]) + text(m["key_id"])
    out += struct.pack(">I", len(m["pages"]))
    for i, p in enumerate(m["pages"]):
        if p["index"] != i:
            raise Bad(f"page {i} is listed as {p['index']}")
        digest = bytes.fromhex(p["sha256"])
        if len(digest) != 32:
            raise Bad(f"page {i}: the digest is not 32 bytes")
        out += struct.pack(">I", p["index"]) + text(p["name"])
        out += struct.pack(">Q", p["size"]) + digest
    return out


def trusted_keys(args):
    keys = {}
    for given in args.public_key or []:
        key_id, _, hexkey = given.partition("=")
        keys[key_id] = bytes.fromhex(hexkey)
    if args.keys:
        with open(args.keys, encoding="utf-8") as f:
            doc = json.load(f)
        if doc.get("type") != "quire-signing-keys":
            raise Bad(f"{args.keys} is not a quire-signing-keys export")
        for k in doc["keys"]:
            keys[k["key_id"]] = bytes.fromhex(k["public_key"])
    if not keys:
        raise Bad("no trusted key given (--public-key or --keys)")
    return keys


def check_folder(m, folder):
    for p in m["pages"]:
        name = p["name"]
        if "/" in name or "\\" in name or name in (".", ".."):
            raise Bad(f"page name {name!r} points outside the folder")
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise Bad(f"page {p['index']} ({name}) is missing")
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        if size != p["size"] or h.hexdigest() != p["sha256"].lower():
            raise Bad(f"page {p['index']} ({name}) differs from what was signed")


def check_timestamp(m, signature, ca):
    token = bytes.fromhex(m["timestamp"])
    with tempfile.NamedTemporaryFile(suffix=".tst") as f:
        f.write(token)
        f.flush()
        done = subprocess.run(
            ["openssl", "ts", "-verify", "-digest", hashlib.sha256(signature).hexdigest(),
             "-in", f.name, "-token_in", "-CAfile", ca],
            capture_output=True, text=True)
    if done.returncode != 0 or "Verification: OK" not in done.stdout:
        raise Bad("the time-stamp is not the TSA's over this signature: "
                  + (done.stdout + done.stderr).strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("manifest")
    parser.add_argument("--public-key", action="append")
    parser.add_argument("--keys")
    parser.add_argument("--folder")
    parser.add_argument("--tsa-ca")
    args = parser.parse_args()
    try:
        with open(args.manifest, encoding="utf-8") as f:
            m = json.load(f)
        version = m.get("v")
        if m.get("type") != "quire-signed-manifest" or version not in (1, 2):
            raise Bad("not a version 1 or 2 quire-signed-manifest")
        if (version == 2) != ("timestamp" in m):
            raise Bad("a version 2 manifest, and only one, carries a time-stamp")
        keys = trusted_keys(args)
        key = keys.get(m["key_id"])
        if key is None:
            raise Bad(f"signed by {m['key_id']}, which is not a trusted key")
        signature = bytes.fromhex(m["signature"])
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, signed_bytes(m))
        except InvalidSignature:
            raise Bad("the signature does not match the manifest") from None
        stamped = ""
        if "timestamp" in m and args.tsa_ca:
            check_timestamp(m, signature, args.tsa_ca)
            stamped = " timestamp=verified"
        if args.folder:
            check_folder(m, args.folder)
    except Bad as e:
        print(f"manifest does not verify: {e}", file=sys.stderr)
        return 1
    folder = f" folder={args.folder}" if args.folder else ""
    print(
        f"ok tenant={m['tenant']} job={m['job_id']} pages={len(m['pages'])} "
        f"key={m['key_id']} committed_unix_ms={m['committed_unix_ms']}{folder}{stamped}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
