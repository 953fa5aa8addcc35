"""Golden models of CityHash64 v1.1 and FarmHash Fingerprint64, written from the published
algorithms (Google CityHash 1.1, ``city.cc``; Google FarmHash, ``farmhash.cc``, whose
``Fingerprint64`` is ``farmhashna::Hash64``).

These are the specification the CPU kernels are checked against: one record at a time, Python
ints, explicit masks, standard library only. Both hashes read the input as little-endian words
(``Fetch64``/``Fetch32``) whatever the host's byte order.

FarmHash's ``farmhashna`` grew out of CityHash: the constants and the paths for up to 32 bytes
(:func:`_hash_len_0to16`, :func:`_hash_len_17to32`) are the same function, so a record of at most
32 bytes has the same CityHash64 and Fingerprint64. They differ from 33 bytes on: 33..64 bytes
(:func:`_city_len_33to64` against :func:`_farm_len_33to64`) and the 64-byte-chunk loop beyond
(:func:`_city_long` against :func:`_farm_long`: CityHash seeds its state from the record's last
64 bytes and loops over whole chunks; FarmHash starts from the constant seed 81 and finishes with
a last round over the record's last 64 bytes under a length-dependent multiplier).

CityHash versions differ: v1.0.x (e.g. the ``clickhouse-cityhash`` package) is another function;
this is v1.1 (v1.1.1 changed only CityHash32).
"""

from __future__ import annotations

__all__ = [
    "CITY_K0",
    "CITY_K1",
    "CITY_K2",
    "CITY_KMUL",
    "FARM_SEED",
    "cityhash64",
    "farmhash64",
    "hash_len16",
]

MASK64 = (1 << 64) - 1

# "Some primes between 2^63 and 2^64" (k0, k1, k2 of city.cc and farmhash.cc).
CITY_K0 = 0xC3A5C85C97CB3127
CITY_K1 = 0xB492B66FBE98F273
CITY_K2 = 0x9AE16A3B2F90404F
# Hash128to64's multiplier (HashLen16 with two arguments).
CITY_KMUL = 0x9DDFEA08EB382D69
# farmhashna::Hash64's internal seed for records over 64 bytes.
FARM_SEED = 81


def _fetch64(s: bytes, i: int) -> int:
    return int.from_bytes(s[i : i + 8], "little")


def _fetch32(s: bytes, i: int) -> int:
    return int.from_bytes(s[i : i + 4], "little")


def _rotr(v: int, shift: int) -> int:
    """``v`` rotated right by ``shift`` bits, 0 < shift < 64 (City's ``Rotate``)."""
    return ((v >> shift) | (v << (64 - shift))) & MASK64


def _bswap64(v: int) -> int:
    return int.from_bytes(v.to_bytes(8, "little"), "big")


def _shift_mix(v: int) -> int:
    return v ^ (v >> 47)


def hash_len16(u: int, v: int, mul: int = CITY_KMUL) -> int:
    """City's ``HashLen16(u, v, mul)``; with the default ``mul`` it is ``HashLen16(u, v)`` =
    ``Hash128to64(uint128(low=u, high=v))``."""
    a = ((u ^ v) * mul) & MASK64
    a ^= a >> 47
    b = ((v ^ a) * mul) & MASK64
    b ^= b >> 47
    return (b * mul) & MASK64


# ---------------------------------------------------------------------------------------------
# Up to 32 bytes: shared by CityHash64 v1.1 and farmhashna
# ---------------------------------------------------------------------------------------------


def _hash_len_0to16(s: bytes) -> int:
    n = len(s)
    if n >= 8:
        mul = CITY_K2 + 2 * n
        a = (_fetch64(s, 0) + CITY_K2) & MASK64
        b = _fetch64(s, n - 8)
        c = (_rotr(b, 37) * mul + a) & MASK64
        d = ((_rotr(a, 25) + b) * mul) & MASK64
        return hash_len16(c, d, mul)
    if n >= 4:
        mul = CITY_K2 + 2 * n
        a = _fetch32(s, 0)
        return hash_len16(n + (a << 3), _fetch32(s, n - 4), mul)
    if n > 0:
        # Bytes are unsigned here (the C code casts them to uint8).
        y = s[0] + (s[n >> 1] << 8)
        z = n + (s[n - 1] << 2)
        return (_shift_mix(((y * CITY_K2) ^ (z * CITY_K0)) & MASK64) * CITY_K2) & MASK64
    return CITY_K2


def _hash_len_17to32(s: bytes) -> int:
    n = len(s)
    mul = CITY_K2 + 2 * n
    a = (_fetch64(s, 0) * CITY_K1) & MASK64
    b = _fetch64(s, 8)
    c = (_fetch64(s, n - 8) * mul) & MASK64
    d = (_fetch64(s, n - 16) * CITY_K2) & MASK64
    return hash_len16(
        (_rotr((a + b) & MASK64, 43) + _rotr(c, 30) + d) & MASK64,
        (a + _rotr((b + CITY_K2) & MASK64, 18) + c) & MASK64,
        mul,
    )


def _weak_hash_len32_with_seeds(s: bytes, i: int, a: int, b: int) -> tuple[int, int]:
    """A 16-byte hash of ``s[i:i+32]``, ``a`` and ``b`` ("quick and dirty", as City says)."""
    w, x, y, z = (_fetch64(s, i + 8 * k) for k in range(4))
    a = (a + w) & MASK64
    b = _rotr((b + a + z) & MASK64, 21)
    c = a
    a = (a + x + y) & MASK64
    b = (b + _rotr(a, 44)) & MASK64
    return (a + z) & MASK64, (b + c) & MASK64


# ---------------------------------------------------------------------------------------------
# 33..64 bytes: the two hashes differ
# ---------------------------------------------------------------------------------------------


def _city_len_33to64(s: bytes) -> int:
    n = len(s)
    mul = CITY_K2 + 2 * n
    a = (_fetch64(s, 0) * CITY_K2) & MASK64
    b = _fetch64(s, 8)
    c = _fetch64(s, n - 24)
    d = _fetch64(s, n - 32)
    e = (_fetch64(s, 16) * CITY_K2) & MASK64
    f = (_fetch64(s, 24) * 9) & MASK64
    g = _fetch64(s, n - 8)
    h = (_fetch64(s, n - 16) * mul) & MASK64
    u = (_rotr((a + g) & MASK64, 43) + (_rotr(b, 30) + c) * 9) & MASK64
    v = ((((a + g) & MASK64) ^ d) + f + 1) & MASK64
    w = (_bswap64(((u + v) * mul) & MASK64) + h) & MASK64
    x = (_rotr((e + f) & MASK64, 42) + c) & MASK64
    y = ((_bswap64(((v + w) * mul) & MASK64) + g) * mul) & MASK64
    z = (e + f + c) & MASK64
    a = (_bswap64(((x + z) * mul + y) & MASK64) + b) & MASK64
    b = (_shift_mix(((z + a) * mul + d + h) & MASK64) * mul) & MASK64
    return (b + x) & MASK64


def _farm_len_33to64(s: bytes) -> int:
    """farmhashna: two rounds of the 17..32-byte mix (over the first and the last 32 bytes)."""
    n = len(s)
    mul = CITY_K2 + 2 * n
    a = (_fetch64(s, 0) * CITY_K2) & MASK64
    b = _fetch64(s, 8)
    c = (_fetch64(s, n - 8) * mul) & MASK64
    d = (_fetch64(s, n - 16) * CITY_K2) & MASK64
    y = (_rotr((a + b) & MASK64, 43) + _rotr(c, 30) + d) & MASK64
    z = hash_len16(y, (a + _rotr((b + CITY_K2) & MASK64, 18) + c) & MASK64, mul)
    e = (_fetch64(s, 16) * mul) & MASK64
    f = _fetch64(s, 24)
    g = ((y + _fetch64(s, n - 32)) * mul) & MASK64
    h = ((z + _fetch64(s, n - 24)) * mul) & MASK64
    return hash_len16(
        (_rotr((e + f) & MASK64, 43) + _rotr(g, 30) + h) & MASK64,
        (e + _rotr((f + a) & MASK64, 18) + g) & MASK64,
        mul,
    )


# ---------------------------------------------------------------------------------------------
# Over 64 bytes: the 64-byte-chunk loop (same round, different start and finish)
# ---------------------------------------------------------------------------------------------

State = tuple[int, int, int, tuple[int, int], tuple[int, int]]


def _chunk_round(s: bytes, p: int, st: State, mul: int) -> State:
    """One round over ``s[p:p+64]`` of the state (x, y, z, v, w), ``std::swap(z, x)`` included.
    City and farmhashna use it with ``mul = k1`` for every whole chunk."""
    x, y, z, v, w = st
    x = (_rotr((x + y + v[0] + _fetch64(s, p + 8)) & MASK64, 37) * mul) & MASK64
    y = (_rotr((y + v[1] + _fetch64(s, p + 48)) & MASK64, 42) * mul) & MASK64
    x ^= w[1]
    y = (y + v[0] + _fetch64(s, p + 40)) & MASK64
    z = (_rotr((z + w[0]) & MASK64, 33) * mul) & MASK64
    v = _weak_hash_len32_with_seeds(s, p, (v[1] * mul) & MASK64, (x + w[0]) & MASK64)
    w = _weak_hash_len32_with_seeds(s, p + 32, (z + w[1]) & MASK64, (y + _fetch64(s, p + 16)) & MASK64)
    return z, y, x, v, w


def _city_long(s: bytes) -> int:
    n = len(s)
    # The state starts from the record's end; then the loop runs over the whole 64-byte chunks
    # before it, plus one more that overlaps the end ((n - 1) // 64 rounds from offset 0).
    x = _fetch64(s, n - 40)
    y = (_fetch64(s, n - 16) + _fetch64(s, n - 56)) & MASK64
    z = hash_len16((_fetch64(s, n - 48) + n) & MASK64, _fetch64(s, n - 24))
    v = _weak_hash_len32_with_seeds(s, n - 64, n, z)
    w = _weak_hash_len32_with_seeds(s, n - 32, (y + CITY_K1) & MASK64, x)
    x = (x * CITY_K1 + _fetch64(s, 0)) & MASK64
    st: State = (x, y, z, v, w)
    for p in range(0, (n - 1) // 64 * 64, 64):
        st = _chunk_round(s, p, st, CITY_K1)
    x, y, z, v, w = st
    return hash_len16(
        (hash_len16(v[0], w[0]) + _shift_mix(y) * CITY_K1 + z) & MASK64,
        (hash_len16(v[1], w[1]) + x) & MASK64,
    )


def _farm_long(s: bytes) -> int:
    n = len(s)
    # farmhashna: a constant start, the same rounds over the whole chunks before the last
    # (n - 1) % 64 + 1 bytes, then a last round over s[n-64:n] with a multiplier from z.
    y = (FARM_SEED * CITY_K1 + 113) & MASK64
    z = (_shift_mix((y * CITY_K2 + 113) & MASK64) * CITY_K2) & MASK64
    x = (FARM_SEED * CITY_K2 + _fetch64(s, 0)) & MASK64
    st: State = (x, y, z, (0, 0), (0, 0))
    for p in range(0, (n - 1) // 64 * 64, 64):
        st = _chunk_round(s, p, st, CITY_K1)
    x, y, z, v, w = st
    mul = CITY_K1 + ((z & 0xFF) << 1)
    w0 = (w[0] + ((n - 1) & 63)) & MASK64
    v0 = (v[0] + w0) & MASK64
    w0 = (w0 + v0) & MASK64
    # The last round differs from _chunk_round by its "* 9"s.
    p = n - 64
    x = (_rotr((x + y + v0 + _fetch64(s, p + 8)) & MASK64, 37) * mul) & MASK64
    y = (_rotr((y + v[1] + _fetch64(s, p + 48)) & MASK64, 42) * mul) & MASK64
    x ^= (w[1] * 9) & MASK64
    y = (y + v0 * 9 + _fetch64(s, p + 40)) & MASK64
    z = (_rotr((z + w0) & MASK64, 33) * mul) & MASK64
    v = _weak_hash_len32_with_seeds(s, p, (v[1] * mul) & MASK64, (x + w0) & MASK64)
    w = _weak_hash_len32_with_seeds(s, p + 32, (z + w[1]) & MASK64, (y + _fetch64(s, p + 16)) & MASK64)
    z, x = x, z
    return hash_len16(
        (hash_len16(v[0], w[0], mul) + _shift_mix(y) * CITY_K0 + z) & MASK64,
        (hash_len16(v[1], w[1], mul) + x) & MASK64,
        mul,
    )


# ---------------------------------------------------------------------------------------------
# The two hashes
# ---------------------------------------------------------------------------------------------


def _check_bytes(data: bytes) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    return bytes(data)


def cityhash64(data: bytes, seed: int | None = None) -> int:
    """CityHash64 v1.1 of ``data``; with a ``seed`` (0 <= seed < 2**64), CityHash64WithSeed
    (= ``HashLen16(CityHash64(data) - k2, seed)``)."""
    s = _check_bytes(data)
    n = len(s)
    if n <= 16:
        h = _hash_len_0to16(s)
    elif n <= 32:
        h = _hash_len_17to32(s)
    elif n <= 64:
        h = _city_len_33to64(s)
    else:
        h = _city_long(s)
    if seed is None:
        return h
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MASK64:
        raise ValueError(f"cityhash64 seed must be an int in [0, 2**64), got {seed!r}")
    return hash_len16((h - CITY_K2) & MASK64, seed)


def farmhash64(data: bytes) -> int:
    """FarmHash ``Fingerprint64`` of ``data`` (= ``farmhashna::Hash64``; TensorFlow's
    ``tf.fingerprint`` and ``to_hash_bucket_fast``)."""
    s = _check_bytes(data)
    n = len(s)
    if n <= 16:
        return _hash_len_0to16(s)
    if n <= 32:
        return _hash_len_17to32(s)
    if n <= 64:
        return _farm_len_33to64(s)
    return _farm_long(s)
