#!/usr/bin/env python3
"""Verify a Quire audit export (`quire admin audit export`) independently of Quire.

Written from docs/AUDIT.md alone, with the standard library and `cryptography`. Checks every
record's hash, the chain links between records, and every checkpoint's Ed25519 signature and
its agreement with the record it covers.

    verify_audit.py EXPORT.jsonl [--public-key KEY_ID=HEX ...]

Without --public-key the keys in the export's header are used (trust on first use); with it,
only the keys given. Prints a summary and exits 0, or names the first problem and exits 1.
"""

import argparse
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

RECORD_DOMAIN = b"quire audit record v2\0"
CHECKPOINT_DOMAIN = b"quire audit checkpoint v1\0"
GENESIS = "00" * 32


class Bad(Exception):
    pass


def field(value):
    data = value.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def record_hash(r):
    m = RECORD_DOMAIN + struct.pack(">QQ", r["seq"], r["ts_unix_ms"])
    for name in ("tenant", "actor", "role", "action", "detail", "outcome"):
        m += field(r[name])
    m += bytes.fromhex(r["prev"])
    return hashlib.sha256(m).hexdigest()


def checkpoint_message(c):
    return (
        CHECKPOINT_DOMAIN
        + field(c["tenant"])
        + struct.pack(">Q", c["seq"])
        + bytes.fromhex(c["hash"])
        + struct.pack(">Q", c["signed_unix_ms"])
        + field(c["key_id"])
    )


def verify(lines, trusted):
    header = json.loads(lines[0])
    if header.get("type") != "quire-audit-export" or header.get("v") != 1:
        raise Bad("line 1: not a Quire audit export (version 1)")
    tenant = header["tenant"]
    keys = trusted if trusted is not None else header["public_keys"]
    records, checkpoints, legacy = [], [], 0
    for number, text in enumerate(lines[1:], start=2):
        obj = json.loads(text)
        if "checkpoint" in obj:
            checkpoints.append(obj["checkpoint"])
        elif "v" not in obj:
            if records:
                raise Bad(f"line {number}: an unchained record after chaining began: inserted")
            legacy += 1
        elif obj["v"] != 2:
            raise Bad(f"line {number}: unknown record format {obj['v']}")
        else:
            records.append((number, obj))

    by_seq = {}
    previous = None
    for number, r in records:
        where = f"line {number}, record {r['seq']}"
        if r["tenant"] != tenant:
            raise Bad(f"{where}: belongs to tenant {r['tenant']!r}, not {tenant!r}")
        if record_hash(r) != r["hash"]:
            raise Bad(f"{where}: its content does not match its hash: the record was edited")
        if previous is None:
            if r["seq"] == 1 and r["prev"] != GENESIS:
                raise Bad(f"{where}: the first record does not start the chain")
        else:
            if r["seq"] != previous["seq"] + 1:
                raise Bad(f"{where}: expected record {previous['seq'] + 1}: missing or reordered")
            if r["prev"] != previous["hash"]:
                raise Bad(f"{where}: it does not follow the record before it")
        by_seq[r["seq"]] = r
        previous = r

    first = records[0][1]["seq"] if records else None
    last = previous["seq"] if previous else 0
    checked = 0
    for c in checkpoints:
        if c["tenant"] != tenant:
            raise Bad(f"checkpoint of record {c['seq']}: for another chain")
        if c["key_id"] not in keys:
            raise Bad(f"checkpoint of record {c['seq']}: signed by {c['key_id']}, a key not trusted")
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(keys[c["key_id"]]))
        try:
            key.verify(bytes.fromhex(c["signature"]), checkpoint_message(c))
        except InvalidSignature:
            raise Bad(f"checkpoint of record {c['seq']}: the signature does not verify")
        if c["seq"] > last:
            raise Bad(
                f"a checkpoint signed record {c['seq']} but the trail ends at {last}: truncated"
            )
        if first is not None and c["seq"] >= first:
            if by_seq[c["seq"]]["hash"] != c["hash"]:
                raise Bad(f"record {c['seq']} differs from its signed checkpoint: rewritten")
            checked += 1
    return tenant, len(records), legacy, checked


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("--public-key", action="append", default=None, metavar="KEY_ID=HEX")
    args = parser.parse_args()
    trusted = None
    if args.public_key is not None:
        trusted = dict(k.split("=", 1) for k in args.public_key)
    with open(args.export, "r", encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line]
    try:
        tenant, records, legacy, checked = verify(lines, trusted)
    except (Bad, KeyError, ValueError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"ok tenant={tenant} records={records} legacy={legacy} checkpoints={checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
