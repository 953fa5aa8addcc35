"""Golden models: the operator contract (docs/operators.md) written as plain Python on ints.

These functions are the specification. Every backend (CPU kernels, Amaranth cores, the Verilator
model, the FPGA, the SmartNIC service) is checked against them and never against each other.
They are deliberately slow and readable: one record at a time, Python ints, explicit masks.

Hardware constants (primes, shifts, bit layouts) are defined here once and imported by ``offload.hw``
and the CPU kernels, never retyped.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

from offload.golden_cityhash import cityhash64, farmhash64
from offload.golden_murmur3 import murmur3_32

__all__ = [
    "MASK32",
    "MASK64",
    "XXH32_PRIMES",
    "XXH64_PRIMES",
    "FID_V1_SLOT_BITS",
    "FID_V1_SIG_BITS",
    "FID_V2_SLOT_BITS",
    "FID_V2_SIG_BITS",
    "FID_LAYOUT",
    "rotl32",
    "rotl64",
    "xxh32",
    "xxh64",
    "HASHES",
    "hash_by_name",
    "hash_bucket",
    "fastrange64",
    "fid",
    "bucketize",
    "zigzag64",
    "unzigzag64",
    "leb128_encode",
    "delta_varint_encode_seq",
    "delta_varint_decode_seq",
]

MASK32 = (1 << 32) - 1
MASK64 = (1 << 64) - 1

# xxHash primes, from xxHash's xxhash.h (XXH_PRIME32_1..5, XXH_PRIME64_1..5).
XXH32_PRIMES = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1)
XXH64_PRIMES = (
    0x9E3779B185EBCA87,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0x85EBCA77C2B2AE63,
    0x27D4EB2F165667C5,
)

# Monolith FID layouts: (slot bits, signature bits). v1: 10-bit slot above a 54-bit signature;
# v2: 15-bit slot above a 48-bit signature, bit 63 left 0.
FID_V1_SLOT_BITS, FID_V1_SIG_BITS = 10, 54
FID_V2_SLOT_BITS, FID_V2_SIG_BITS = 15, 48
FID_LAYOUT = {1: (FID_V1_SLOT_BITS, FID_V1_SIG_BITS), 2: (FID_V2_SLOT_BITS, FID_V2_SIG_BITS)}


def rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & MASK32


def rotl64(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & MASK64


def _u32(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 4], "little")


def _u64(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 8], "little")


# ---------------------------------------------------------------------------------------------
# XXH32
# ---------------------------------------------------------------------------------------------


def _xxh32_round(acc: int, lane: int) -> int:
    p1, p2 = XXH32_PRIMES[0], XXH32_PRIMES[1]
    acc = (acc + lane * p2) & MASK32
    acc = rotl32(acc, 13)
    return (acc * p1) & MASK32


def xxh32_avalanche(h: int) -> int:
    p2, p3 = XXH32_PRIMES[1], XXH32_PRIMES[2]
    h ^= h >> 15
    h = (h * p2) & MASK32
    h ^= h >> 13
    h = (h * p3) & MASK32
    h ^= h >> 16
    return h


def xxh32(data: bytes, seed: int = 0) -> int:
    """XXH32 of ``data`` with a 32-bit ``seed`` (xxHash's XXH32)."""
    p1, p2, p3, p4, p5 = XXH32_PRIMES
    n = len(data)
    i = 0
    if n >= 16:
        v1 = (seed + p1 + p2) & MASK32
        v2 = (seed + p2) & MASK32
        v3 = seed & MASK32
        v4 = (seed - p1) & MASK32
        while i + 16 <= n:
            v1 = _xxh32_round(v1, _u32(data, i))
            v2 = _xxh32_round(v2, _u32(data, i + 4))
            v3 = _xxh32_round(v3, _u32(data, i + 8))
            v4 = _xxh32_round(v4, _u32(data, i + 12))
            i += 16
        h = (rotl32(v1, 1) + rotl32(v2, 7) + rotl32(v3, 12) + rotl32(v4, 18)) & MASK32
    else:
        h = (seed + p5) & MASK32
    h = (h + n) & MASK32
    while i + 4 <= n:
        h = (h + _u32(data, i) * p3) & MASK32
        h = (rotl32(h, 17) * p4) & MASK32
        i += 4
    while i < n:
        h = (h + data[i] * p5) & MASK32
        h = (rotl32(h, 11) * p1) & MASK32
        i += 1
    return xxh32_avalanche(h)


# ---------------------------------------------------------------------------------------------
# XXH64
# ---------------------------------------------------------------------------------------------


def _xxh64_round(acc: int, lane: int) -> int:
    p1, p2 = XXH64_PRIMES[0], XXH64_PRIMES[1]
    acc = (acc + lane * p2) & MASK64
    acc = rotl64(acc, 31)
    return (acc * p1) & MASK64


def _xxh64_merge_round(h: int, v: int) -> int:
    p1, p4 = XXH64_PRIMES[0], XXH64_PRIMES[3]
    h ^= _xxh64_round(0, v)
    return (h * p1 + p4) & MASK64


def xxh64_avalanche(h: int) -> int:
    p2, p3 = XXH64_PRIMES[1], XXH64_PRIMES[2]
    h ^= h >> 33
    h = (h * p2) & MASK64
    h ^= h >> 29
    h = (h * p3) & MASK64
    h ^= h >> 32
    return h


def xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64 of ``data`` with a 64-bit ``seed`` (xxHash's XXH64)."""
    p1, p2, p3, p4, p5 = XXH64_PRIMES
    n = len(data)
    i = 0
    if n >= 32:
        v1 = (seed + p1 + p2) & MASK64
        v2 = (seed + p2) & MASK64
        v3 = seed & MASK64
        v4 = (seed - p1) & MASK64
        while i + 32 <= n:
            v1 = _xxh64_round(v1, _u64(data, i))
            v2 = _xxh64_round(v2, _u64(data, i + 8))
            v3 = _xxh64_round(v3, _u64(data, i + 16))
            v4 = _xxh64_round(v4, _u64(data, i + 24))
            i += 32
        h = (rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18)) & MASK64
        for v in (v1, v2, v3, v4):
            h = _xxh64_merge_round(h, v)
    else:
        h = (seed + p5) & MASK64
    h = (h + n) & MASK64
    while i + 8 <= n:
        h ^= _xxh64_round(0, _u64(data, i))
        h = (rotl64(h, 27) * p1 + p4) & MASK64
        i += 8
    if i + 4 <= n:
        h ^= (_u32(data, i) * p1) & MASK64
        h = (rotl64(h, 23) * p2 + p3) & MASK64
        i += 4
    while i < n:
        h ^= (data[i] * p5) & MASK64
        h = (rotl64(h, 11) * p1) & MASK64
        i += 1
    return xxh64_avalanche(h)


# ---------------------------------------------------------------------------------------------
# Derived operators
# ---------------------------------------------------------------------------------------------


def fastrange64(h: int, num_buckets: int) -> int:
    """``(h * num_buckets) >> 64`` in 128-bit unsigned arithmetic (Lemire's fastrange)."""
    return (h * num_buckets) >> 64


#: The hashes ``hash_bucket`` and ``fid`` take by name: ``(data, seed) -> int``. ``seed`` is
#: None for the hash's default: 0 for the seeded hashes, the unseeded ``CityHash64`` for
#: cityhash64; farmhash64 (FarmHash ``Fingerprint64``) has no seed.
HASHES: dict[str, Callable[[bytes, int | None], int]] = {
    "xxh64": lambda data, seed: xxh64(data, seed or 0),
    "farmhash64": lambda data, seed: farmhash64(data),
    "cityhash64": cityhash64,
    "murmur3_32": lambda data, seed: murmur3_32(data, seed or 0),
}


def hash_by_name(hash: str, data: bytes, seed: int | None = None) -> int:
    """The hash ``hash`` (a key of :data:`HASHES`) of ``data``, as an unsigned int."""
    return HASHES[hash](data, seed)


def hash_bucket(
    data: bytes, num_buckets: int, seed: int | None = None, method: str = "mod", hash: str = "xxh64"
) -> int:
    """``h % num_buckets`` (``"mod"``) or ``(h * num_buckets) >> 64`` (``"fastrange"``) of the
    unsigned hash ``h`` (``fastrange`` needs a 64-bit hash: the registry refuses it with
    murmur3_32)."""
    h = hash_by_name(hash, data, seed)
    if method == "mod":
        return h % num_buckets
    if method == "fastrange":
        return fastrange64(h, num_buckets)
    raise ValueError(f"unknown hash_bucket method {method!r}: expected 'mod' or 'fastrange'")


def fid(data: bytes, slot: int, version: int = 2, seed: int | None = None, hash: str = "xxh64") -> int:
    """Monolith-layout feature id: ``slot`` in the high bits above a hash signature (XXH64 by
    default; Monolith's own code uses CityHash64)."""
    slot_bits, sig_bits = FID_LAYOUT[version]
    assert 0 <= slot < (1 << slot_bits)
    return (slot << sig_bits) | (hash_by_name(hash, data, seed) & ((1 << sig_bits) - 1))


def _key(v: float | int) -> float | int:
    # -0.0 == 0.0 already holds for Python floats; kept explicit so the rule is visible.
    return 0.0 if (isinstance(v, float) and v == 0.0) else v


def bucketize(x: float | int, boundaries: Sequence[float | int], right: bool = True) -> int:
    """Index of ``x`` among strictly increasing ``boundaries``.

    ``right=True``: number of boundaries ``b <= x`` (TF Bucketize, np.digitize).
    ``right=False``: number of boundaries ``b < x`` (torch.bucketize default).
    NaN goes to ``len(boundaries)``; -0.0 equals 0.0; infinities compare as usual.
    """
    if isinstance(x, float) and math.isnan(x):
        return len(boundaries)
    x = _key(x)
    if right:
        return sum(1 for b in boundaries if _key(b) <= x)
    return sum(1 for b in boundaries if _key(b) < x)


# ---------------------------------------------------------------------------------------------
# Sequence coding: delta + zigzag + LEB128
# ---------------------------------------------------------------------------------------------


def _to_signed64(v: int) -> int:
    v &= MASK64
    return v - (1 << 64) if v >> 63 else v


def zigzag64(d: int) -> int:
    """protobuf sint64 zigzag of a signed 64-bit value: ``(d << 1) ^ (d >> 63)``."""
    d = _to_signed64(d)
    return ((d << 1) ^ (d >> 63)) & MASK64


def unzigzag64(z: int) -> int:
    return _to_signed64((z >> 1) ^ -(z & 1))


def leb128_encode(z: int) -> bytes:
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def delta_varint_encode_seq(values: Sequence[int]) -> bytes:
    """One sequence of int64 values to its delta + zigzag + LEB128 bytes."""
    out = bytearray()
    prev = 0
    for v in values:
        d = _to_signed64(int(v) - prev)
        out += leb128_encode(zigzag64(d))
        prev = _to_signed64(int(v))
    return bytes(out)


def delta_varint_decode_seq(data: bytes, seq_index: int = 0, base_offset: int = 0) -> list[int]:
    """Exact inverse of :func:`delta_varint_encode_seq`.

    Raises ``ValueError`` naming the sequence and the byte offset (``base_offset`` + position in
    ``data``) of the varint that is cut off, longer than 10 bytes, or has a 10th byte above 0x01.
    """
    values: list[int] = []
    prev = 0
    i = 0
    n = len(data)
    while i < n:
        start = i
        z = 0
        shift = 0
        while True:
            if i >= n:
                raise ValueError(
                    f"malformed varint in sequence {seq_index} at byte offset {base_offset + start}: "
                    "cut off at the end of the sequence"
                )
            byte = data[i]
            length = i - start + 1
            if length == 10 and byte & 0x80:
                raise ValueError(
                    f"malformed varint in sequence {seq_index} at byte offset {base_offset + start}: "
                    "longer than 10 bytes"
                )
            if length == 10 and byte > 0x01:
                raise ValueError(
                    f"malformed varint in sequence {seq_index} at byte offset {base_offset + start}: "
                    f"10th byte is 0x{byte:02x}, above 0x01 (value exceeds 64 bits)"
                )
            z |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
        prev = _to_signed64(prev + unzigzag64(z))
        values.append(prev)
    return values


def float32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]
