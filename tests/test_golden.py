"""The golden models against external references.

* XXH32/XXH64: python-xxhash (xxHash's own C code) for every length 0..300 and several seeds, and
  xxHash's published sanity-test vectors (each vector also checked against python-xxhash, so a
  mistyped constant in this file is caught rather than trusted);
* bucketize: ``numpy.searchsorted`` (side="right" for right=True, "left" for right=False);
* delta_varint: an independent zigzag/LEB128 written differently (arithmetic zigzag, bit strings),
  plus the decoder's exact error messages.
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import golden

MASK32 = (1 << 32) - 1
MASK64 = (1 << 64) - 1
SEEDS32 = [0, 1, MASK32, 0x9E3779B1, random.Random(7).randrange(1 << 32)]
SEEDS64 = [0, 1, MASK32, MASK64, 1 << 63, random.Random(7).randrange(1 << 64)]

# ---------------------------------------------------------------------------------------------
# XXH32 / XXH64 vs python-xxhash
# ---------------------------------------------------------------------------------------------

_RNG = random.Random(20261122)
_DATA = bytes(_RNG.randrange(256) for _ in range(300))


@pytest.mark.parametrize("seed", SEEDS32)
def test_xxh32_every_length_vs_xxhash(seed: int) -> None:
    for n in range(301):
        data = _DATA[:n]
        assert golden.xxh32(data, seed) == xxhash.xxh32_intdigest(data, seed), (n, seed)


@pytest.mark.parametrize("seed", SEEDS64)
def test_xxh64_every_length_vs_xxhash(seed: int) -> None:
    for n in range(301):
        data = _DATA[:n]
        assert golden.xxh64(data, seed) == xxhash.xxh64_intdigest(data, seed), (n, seed)


def test_xxh_all_byte_values() -> None:
    """Bytes >= 0x80 (sign-extension bugs) and all-0xFF records."""
    for data in (bytes(range(256)), b"\xff" * 77, b"\x80" * 33, b"\x00" * 65):
        for seed in SEEDS64:
            assert golden.xxh64(data, seed) == xxhash.xxh64_intdigest(data, seed)
            assert golden.xxh32(data, seed & MASK32) == xxhash.xxh32_intdigest(data, seed & MASK32)


# ---------------------------------------------------------------------------------------------
# xxHash sanity-test vectors (xxHash tests/sanity_test_vectors.h, cli/xsum_sanity_check.c)
# ---------------------------------------------------------------------------------------------

SANITY_PRIME32 = 2654435761
SANITY_PRIME64 = 11400714785074694797
SANITY_BUFFER_SIZE = 2367


def sanity_buffer(n: int = SANITY_BUFFER_SIZE) -> bytes:
    """xxHash's fillTestBuffer: byteGen starts at PRIME32, each byte is byteGen >> 56, then
    byteGen *= PRIME64 (mod 2**64)."""
    out = bytearray()
    gen = SANITY_PRIME32
    for _ in range(n):
        out.append(gen >> 56)
        gen = (gen * SANITY_PRIME64) & MASK64
    return bytes(out)


SANITY = sanity_buffer()

# (length, seed, expected): the XXH32/XXH64 table of xxHash's cli/xsum_sanity_check.c
# (XSUM_sanityCheck). Note: XXH32(buffer, 1, PRIME32) is 0xB4545AA4 there (and in python-xxhash);
# 0xA9A9D4E0, a value that has been quoted for this case, is not an xxHash vector.
XXH32_VECTORS = [
    (0, 0, 0x02CC5D05),
    (0, SANITY_PRIME32, 0x36B78AE7),
    (1, 0, 0xCF65B03E),
    (1, SANITY_PRIME32, 0xB4545AA4),
    (14, 0, 0x1208E7E2),
    (14, SANITY_PRIME32, 0x6AF1D1FE),
    (222, 0, 0x5BD11DBD),
    (222, SANITY_PRIME32, 0x58803C5F),
]
XXH64_VECTORS = [
    (0, 0, 0xEF46DB3751D8E999),
    (0, SANITY_PRIME32, 0xAC75FDA2929B17EF),
    (1, 0, 0xE934A84ADB052768),
    (1, SANITY_PRIME32, 0x5014607643A9B4C3),
    (4, 0, 0x9136A0DCA57457EE),
    (14, 0, 0x8282DCC4994E35C8),
    (14, SANITY_PRIME32, 0xC3BD6BF63DEB6DF0),
    (222, 0, 0xB641AE8CB691C174),
    (222, SANITY_PRIME32, 0x20CB8AB7AE10C14A),
]


def test_sanity_buffer_matches_xxhash_generator() -> None:
    # The first bytes of the buffer, as produced by xxHash's generator (gen >> 56 of PRIME32 is 0).
    assert SANITY[0] == SANITY_PRIME32 >> 56 == 0
    assert len(SANITY) == SANITY_BUFFER_SIZE


@pytest.mark.parametrize("n,seed,expected", XXH32_VECTORS)
def test_xxh32_sanity_vectors(n: int, seed: int, expected: int) -> None:
    data = SANITY[:n]
    assert xxhash.xxh32_intdigest(data, seed) == expected, "vector mistyped: xxhash disagrees"
    assert golden.xxh32(data, seed) == expected


@pytest.mark.parametrize("n,seed,expected", XXH64_VECTORS)
def test_xxh64_sanity_vectors(n: int, seed: int, expected: int) -> None:
    data = SANITY[:n]
    assert xxhash.xxh64_intdigest(data, seed) == expected, "vector mistyped: xxhash disagrees"
    assert golden.xxh64(data, seed) == expected


@pytest.mark.parametrize("n", [0, 1, 4, 8, 14, 15, 16, 17, 31, 32, 33, 222, 1024, 2048, SANITY_BUFFER_SIZE])
@pytest.mark.parametrize("seed", [0, SANITY_PRIME32, SANITY_PRIME64])
def test_sanity_buffer_prefixes(n: int, seed: int) -> None:
    data = SANITY[:n]
    assert golden.xxh64(data, seed) == xxhash.xxh64_intdigest(data, seed)
    assert golden.xxh32(data, seed & MASK32) == xxhash.xxh32_intdigest(data, seed & MASK32)


# ---------------------------------------------------------------------------------------------
# Derived operators
# ---------------------------------------------------------------------------------------------


def test_hash_bucket_and_fid_definitions() -> None:
    for n in (0, 1, 8, 40):
        data = _DATA[:n]
        h = xxhash.xxh64_intdigest(data, 5)
        for nb in (1, 2, 3, 1000, (1 << 63) - 1, 1 << 63):
            assert golden.hash_bucket(data, nb, 5, "mod") == h % nb
            assert golden.hash_bucket(data, nb, 5, "fastrange") == (h * nb) >> 64
            assert 0 <= golden.hash_bucket(data, nb, 5, "fastrange") < nb
        assert golden.fid(data, 1023, 1, 5) == (1023 << 54) | (h & ((1 << 54) - 1))
        assert golden.fid(data, 32767, 2, 5) == (32767 << 48) | (h & ((1 << 48) - 1))
        assert golden.fid(data, 32767, 2, 5) >> 63 == 0


# ---------------------------------------------------------------------------------------------
# bucketize vs numpy.searchsorted
# ---------------------------------------------------------------------------------------------

SPECIALS = [np.nan, -0.0, 0.0, np.inf, -np.inf, 1.0, -1.0, 0.5, 2.5]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("right", [True, False])
def test_bucketize_vs_searchsorted(dtype: type, right: bool) -> None:
    rng = np.random.default_rng(3)
    side = "right" if right else "left"
    is_float = np.dtype(dtype).kind == "f"
    for nb in (0, 1, 2, 5, 64):
        if is_float:
            pool = np.concatenate(
                [[-np.inf, 0.0, np.inf, 1.0, -1.0], np.round(rng.standard_normal(80) * 4, 1)]
            ).astype(dtype)
        else:
            info = np.iinfo(dtype)
            pool = np.concatenate([[info.min, info.max, 0, 1, -1], rng.integers(-20, 20, 80)]).astype(dtype)
        uniq = np.unique(pool)
        bnd = uniq[:0] if nb == 0 else np.sort(rng.choice(uniq, min(nb, len(uniq)), False))
        if is_float:
            x = np.concatenate([np.array(SPECIALS, dtype), bnd, pool]).astype(dtype)
        else:
            info = np.iinfo(dtype)
            x = np.concatenate([np.array([info.min, info.max, 0, -1, 1], dtype), bnd, pool])
        expected = np.searchsorted(bnd, x, side=side)
        got = [golden.bucketize(v, bnd.tolist(), right) for v in x.tolist()]
        assert got == expected.tolist()


def test_bucketize_nan_negative_zero_boundaries() -> None:
    # A -0.0 boundary equals 0.0: x = 0.0 and x = -0.0 both count it for right=True.
    assert golden.bucketize(0.0, [-0.0], True) == 1
    assert golden.bucketize(-0.0, [0.0], True) == 1
    assert golden.bucketize(-0.0, [0.0], False) == 0
    assert golden.bucketize(float("nan"), [0.0, 1.0], True) == 2
    assert golden.bucketize(float("nan"), [0.0, 1.0], False) == 2
    assert golden.bucketize(float("inf"), [0.0, float("inf")], True) == 2
    assert golden.bucketize(float("inf"), [0.0, float("inf")], False) == 1
    assert golden.bucketize(float("-inf"), [float("-inf"), 0.0], False) == 0
    assert np.searchsorted(np.array([-0.0]), np.array([0.0]), side="right")[0] == 1


# ---------------------------------------------------------------------------------------------
# delta_varint vs an independent reference
# ---------------------------------------------------------------------------------------------


def ref_zigzag(d: int) -> int:
    """Zigzag by its arithmetic definition (0, -1, 1, -2, 2 ... -> 0, 1, 2, 3, 4 ...)."""
    return 2 * d if d >= 0 else -2 * d - 1


def ref_unzigzag(z: int) -> int:
    return z // 2 if z % 2 == 0 else -(z + 1) // 2


def ref_wrap(v: int) -> int:
    """Signed 64-bit two's complement wrap, via the bit string."""
    bits = format(v & MASK64, "064b")
    return int(bits, 2) - (1 << 64) if bits[0] == "1" else int(bits, 2)


def ref_leb128(z: int) -> bytes:
    """LEB128 from the binary string: 7-bit groups, low group first, 0x80 on all but the last."""
    bits = format(z, "b")
    bits = "0" * (-len(bits) % 7) + bits
    groups = [bits[i : i + 7] for i in range(0, len(bits), 7)][::-1]
    return bytes(int(("1" if k < len(groups) - 1 else "0") + g, 2) for k, g in enumerate(groups))


def ref_encode(values: list[int]) -> bytes:
    out = b""
    prev = 0
    for v in values:
        out += ref_leb128(ref_zigzag(ref_wrap(v - prev)))
        prev = v
    return out


def ref_decode(data: bytes) -> list[int]:
    out, prev, bits = [], 0, ""
    for b in data:
        bits = format(b & 0x7F, "07b") + bits
        if not b & 0x80:
            prev = ref_wrap(prev + ref_unzigzag(int(bits, 2)))
            out.append(prev)
            bits = ""
    assert bits == ""
    return out


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
EDGE_SEQS = [
    [],
    [0],
    [1],
    [-1],
    [INT64_MAX],
    [INT64_MIN],
    [INT64_MAX, INT64_MIN],
    [INT64_MIN, INT64_MAX],
    [0, INT64_MIN, 0],
    [63, 64, -64, -65],
    [8191, 8192, -8192, -8193],
    list(range(-300, 300, 7)),
]


@pytest.mark.parametrize("seq", EDGE_SEQS)
def test_delta_varint_edges(seq: list[int]) -> None:
    enc = golden.delta_varint_encode_seq(seq)
    assert enc == ref_encode(seq)
    assert golden.delta_varint_decode_seq(enc) == seq == ref_decode(enc)


def test_reference_self_check() -> None:
    # Known encodings (protobuf sint64): 0 -> 00, -1 -> 01, 1 -> 02, -64 -> 7f, 64 -> 80 01.
    assert ref_encode([0]) == b"\x00"
    assert ref_encode([-1]) == b"\x01"
    assert ref_encode([1]) == b"\x02"
    assert ref_encode([-64]) == b"\x7f"
    assert ref_encode([64]) == b"\x80\x01"
    assert ref_encode([INT64_MIN]) == b"\xff" * 9 + b"\x01"
    for z in (0, 1, 127, 128, 300, MASK64):
        assert golden.leb128_encode(z) == ref_leb128(z)
        assert golden.zigzag64(ref_unzigzag(z)) == z


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(INT64_MIN, INT64_MAX) | st.integers(-200, 200), max_size=40))
def test_delta_varint_random(seq: list[int]) -> None:
    enc = golden.delta_varint_encode_seq(seq)
    assert enc == ref_encode(seq)
    assert golden.delta_varint_decode_seq(enc) == seq


def _msg(seq: int, off: int, what: str) -> str:
    return "^" + re.escape(f"malformed varint in sequence {seq} at byte offset {off}: {what}") + "$"


@pytest.mark.parametrize(
    "data,seq,base,off,what",
    [
        (b"\x80", 0, 0, 0, "cut off at the end of the sequence"),
        (b"\x02\x80\x80", 4, 100, 101, "cut off at the end of the sequence"),
        (b"\xff" * 9, 0, 0, 0, "cut off at the end of the sequence"),
        (b"\x80" * 10 + b"\x00", 2, 0, 0, "longer than 10 bytes"),
        (b"\x00" + b"\xff" * 11, 1, 7, 8, "longer than 10 bytes"),
        (b"\xff" * 9 + b"\x02", 0, 0, 0, "10th byte is 0x02, above 0x01 (value exceeds 64 bits)"),
        (b"\x04" + b"\x80" * 9 + b"\x7f", 3, 50, 51, "10th byte is 0x7f, above 0x01 (value exceeds 64 bits)"),
    ],
)
def test_delta_varint_decode_errors(data: bytes, seq: int, base: int, off: int, what: str) -> None:
    with pytest.raises(ValueError, match=_msg(seq, off, what)):
        golden.delta_varint_decode_seq(data, seq, base)


def test_delta_varint_decode_ten_byte_limits() -> None:
    # A 10th byte of 0x01 is the largest legal varint (z = 2**64 - 1, i.e. d = INT64_MIN).
    assert golden.delta_varint_decode_seq(b"\xff" * 9 + b"\x01") == [INT64_MIN]
    assert golden.delta_varint_decode_seq(b"\xfe" + b"\xff" * 8 + b"\x01") == [INT64_MAX]
    # Non-canonical but legal (padded) varints decode too.
    assert golden.delta_varint_decode_seq(b"\x82\x80\x00") == [1]
