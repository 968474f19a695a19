#!/usr/bin/env python3
"""Opens Quire sealed objects from docs/FORMAT.md alone, with the `cryptography` package.

Usage: open_sealed.py VECTORS.json [NEGATIVE-VECTORS.json]

For each vector: parse the header, unwrap the data key with the KEK, check the key
commitment, open every chunk, decompress if the header says zstd, and compare with the
expected plaintext. Then make sure a flipped bit and a dropped final chunk are refused.
Written independently of the Rust code, as an auditor would.
"""
import hashlib
import hmac
import json
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

TAG = 16


class Refused(Exception):
    pass


def hkdf(salt, ikm, info):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return HKDFExpand(hashes.SHA256(), 32, info).derive(prk)


def open_sealed(blob, kek, object_key):
    if blob[:4] != b"QRSO" or blob[4] != 1 or blob[5] != 1:
        raise Refused("magic, version or suite")
    hlen = struct.unpack(">H", blob[6:8])[0]
    if not 78 <= hlen <= 512 or len(blob) < hlen:
        raise Refused("header length")
    h = blob[:hlen]
    compression, reserved = h[8], h[9]
    chunk_size = struct.unpack(">I", h[10:14])[0]
    salt, commitment = h[14:46], h[46:78]
    pos = 78
    tlen = h[pos]
    tenant = h[pos + 1 : pos + 1 + tlen]
    pos += 1 + tlen
    bound_end = pos
    klen = h[pos]
    kek_id = h[pos + 1 : pos + 1 + klen]
    pos += 1 + klen
    (kek_version,) = struct.unpack(">I", h[pos : pos + 4])
    wrapped = h[pos + 4 : pos + 64]
    if reserved != 0 or pos + 64 != hlen or compression not in (0, 1):
        raise Refused("header fields")

    wrap_aad = b"quire/1 dek wrap" + bytes([tlen]) + tenant + bytes([klen]) + kek_id + struct.pack(">I", kek_version)
    try:
        dek = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], wrap_aad)
    except InvalidTag:
        raise Refused("data key unwrap")
    if not hmac.compare_digest(hkdf(salt, dek, b"quire/1 key commitment"), commitment):
        raise Refused("key commitment")
    chunk_key = AESGCM(hkdf(salt, dek, b"quire/1 chunk key"))
    ok = object_key.encode()
    aad = hashlib.sha256(b"quire/1 chunk aad" + struct.pack(">Q", len(ok)) + ok + h[:6] + h[8:bound_end]).digest()

    body = blob[hlen:]
    out = bytearray()
    index = 0
    full = chunk_size + TAG
    while True:
        last = len(body) <= full
        if last and len(body) < TAG:
            raise Refused("truncated")
        piece, body = (body, b"") if last else (body[:full], body[full:])
        nonce = b"\x00\x00\x00" + struct.pack(">Q", index) + (b"\x01" if last else b"\x00")
        try:
            out += chunk_key.decrypt(nonce, piece, aad)
        except InvalidTag:
            raise Refused(f"chunk {index}")
        index += 1
        if last:
            break
    if compression == 1:
        import zstandard

        out = zstandard.ZstdDecompressor().decompressobj().decompress(bytes(out))
    return bytes(out)


def main():
    vectors = json.load(open(sys.argv[1]))
    for v in vectors:
        kek = bytes.fromhex(v["kek"])
        blob = bytes.fromhex(v["sealed"])
        plain = open_sealed(blob, kek, v["object_key"])
        assert plain.hex() == v["plaintext"], v["name"]
        for bad, what in [
            (blob[:-1] + bytes([blob[-1] ^ 1]), "flipped last bit"),
            (blob[: len(blob) - 1], "one byte short"),
        ]:
            try:
                open_sealed(bad, kek, v["object_key"])
            except Refused:
                pass
            else:
                raise AssertionError(f"{v['name']}: {what} was accepted")
        try:
            open_sealed(blob, kek, v["object_key"] + "x")
        except Refused:
            pass
        else:
            raise AssertionError(f"{v['name']}: opened under another object key")
        print(f"ok {v['name']}: {len(plain)} bytes")
    print(f"{len(vectors)} vectors opened")
    if len(sys.argv) > 2:
        negatives = json.load(open(sys.argv[2]))
        for v in negatives:
            try:
                open_sealed(bytes.fromhex(v["sealed"]), bytes.fromhex(v["kek"]), v["object_key"])
            except Refused:
                continue
            except Exception as e:  # a crash is not a refusal
                raise AssertionError(f"{v['name']}: crashed instead of refusing: {e!r}")
            raise AssertionError(f"{v['name']}: was accepted")
        print(f"{len(negatives)} negative vectors refused")


if __name__ == "__main__":
    main()
