"""Golden models of MurmurHash3_x86_32 and of Spark SQL's ``hash`` / ``xxhash64`` row chaining.

Written from the published algorithms: Austin Appleby's ``MurmurHash3.cpp`` (SMHasher,
``MurmurHash3_x86_32``), Spark's ``Murmur3_x86_32.java`` (``hashInt``, ``hashLong``,
``hashUnsafeBytes``) and ``XXH64.java``, and Spark SQL's ``HashExpression`` (``Murmur3Hash``,
``XxHash64``). Plain Python on ints, one record at a time, standard library only: like
``offload.golden`` this module is the specification every backend is checked against.

Two tails of MurmurHash3_x86_32 exist in the wild and differ for lengths not a multiple of 4:

- ``"standard"`` (Appleby's C++, PyPI ``mmh3``, Guava, Spark's ``hashUnsafeBytes2`` used by
  Spark ML ``FeatureHasher`` / ``HashingTF``): the 1..3 trailing bytes are packed little-endian
  into one word, which is mixed (``mix_k1``) and xored into the state without a state round.
- ``"spark"`` (Spark's ``hashUnsafeBytes``, kept for backward compatibility and used by Spark SQL
  ``hash()`` on strings and binary): each trailing byte, *sign-extended* to 32 bits as a Java
  ``byte``, gets a full round (``mix_k1`` then ``mix_h1``) of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = [
    "MURMUR3_C1",
    "MURMUR3_C2",
    "MURMUR3_FMIX1",
    "MURMUR3_FMIX2",
    "MURMUR3_H_ADD",
    "SPARK_HASH_SEED",
    "SPARK_TYPES",
    "murmur3_mix_k1",
    "murmur3_mix_h1",
    "murmur3_fmix",
    "murmur3_32",
    "spark_column_bytes",
    "spark_hash_row",
    "spark_xxhash64_row",
]

_MASK32 = (1 << 32) - 1
_MASK64 = (1 << 64) - 1

# Constants of MurmurHash3_x86_32 (MurmurHash3.cpp): the block multipliers c1, c2, the state
# round's additive constant and the two multipliers of the 32-bit finalizer fmix32.
MURMUR3_C1 = 0xCC9E2D51
MURMUR3_C2 = 0x1B873593
MURMUR3_H_ADD = 0xE6546B64
MURMUR3_FMIX1 = 0x85EBCA6B
MURMUR3_FMIX2 = 0xC2B2AE35

# Spark SQL: hash(...) is Murmur3Hash(children, seed = 42); xxhash64(...) is XxHash64(children,
# seed = 42L).
SPARK_HASH_SEED = 42
# Spark SQL types these models cover: IntegerType, LongType, StringType.
SPARK_TYPES = ("int", "long", "string")

_TAILS = ("standard", "spark")


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK32


def murmur3_mix_k1(k: int) -> int:
    """One 32-bit input word scrambled: ``rotl(k * c1, 15) * c2``."""
    k = (k * MURMUR3_C1) & _MASK32
    k = _rotl32(k, 15)
    return (k * MURMUR3_C2) & _MASK32


def murmur3_mix_h1(h: int, k: int) -> int:
    """One state round: ``rotl(h ^ k, 13) * 5 + 0xe6546b64``."""
    h = _rotl32(h ^ k, 13)
    return (h * 5 + MURMUR3_H_ADD) & _MASK32


def murmur3_fmix(h: int, length: int) -> int:
    """The finalizer: xor of the byte length (mod 2**32), then fmix32."""
    h ^= length & _MASK32
    h ^= h >> 16
    h = (h * MURMUR3_FMIX1) & _MASK32
    h ^= h >> 13
    h = (h * MURMUR3_FMIX2) & _MASK32
    h ^= h >> 16
    return h


def _check_seed32(seed: int) -> None:
    if not 0 <= seed <= _MASK32:
        raise ValueError(f"murmur3_32 seed must be in [0, 2**32): got {seed}")


def murmur3_32(data: bytes, seed: int = 0, tail: str = "standard") -> int:
    """MurmurHash3_x86_32 of ``data`` with a 32-bit ``seed``, as an unsigned 32-bit int.

    ``tail="standard"`` is Appleby's algorithm; ``tail="spark"`` is Spark SQL's string tail
    (module docstring). Both agree whenever ``len(data) % 4 == 0``.
    """
    if tail not in _TAILS:
        raise ValueError(f"unknown murmur3_32 tail {tail!r}: expected 'standard' or 'spark'")
    _check_seed32(seed)
    n = len(data)
    aligned = n - n % 4
    h = seed
    for i in range(0, aligned, 4):
        h = murmur3_mix_h1(h, murmur3_mix_k1(int.from_bytes(data[i : i + 4], "little")))
    if tail == "standard":
        if n > aligned:
            h ^= murmur3_mix_k1(int.from_bytes(data[aligned:], "little"))
    else:
        for b in data[aligned:]:
            signed = b - 256 if b >= 128 else b  # a Java byte widened to int
            h = murmur3_mix_h1(h, murmur3_mix_k1(signed & _MASK32))
    return murmur3_fmix(h, n)


# ---------------------------------------------------------------------------------------------
# Spark SQL row hashing: hash(c1, c2, ...) and xxhash64(c1, c2, ...)
# ---------------------------------------------------------------------------------------------


def spark_column_bytes(value: int | str | bytes, type_: str) -> bytes:
    """The bytes Spark hashes for one non-null value: IntegerType as 4 little-endian bytes
    (``hashInt``), LongType as 8 (``hashLong``), StringType as its UTF-8 bytes (bytes are taken
    as already encoded, as BinaryType is)."""
    if type_ == "int":
        if not isinstance(value, int) or not -(1 << 31) <= value < (1 << 31):
            raise ValueError(f"Spark int column value must be an int32: got {value!r}")
        return value.to_bytes(4, "little", signed=True)
    if type_ == "long":
        if not isinstance(value, int) or not -(1 << 63) <= value < (1 << 63):
            raise ValueError(f"Spark long column value must be an int64: got {value!r}")
        return value.to_bytes(8, "little", signed=True)
    if type_ == "string":
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, bytes):
            return value
        raise ValueError(f"Spark string column value must be str or bytes: got {value!r}")
    raise ValueError(f"unknown Spark column type {type_!r}: expected 'int', 'long' or 'string'")


def _check_row(values: Sequence[object], types: Sequence[str]) -> None:
    if len(values) != len(types):
        raise ValueError(f"a Spark row needs one type per value: {len(values)} values, {len(types)} types")


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


def spark_hash_row(
    values: Sequence[int | str | bytes | None],
    types: Sequence[str],
    seed: int = SPARK_HASH_SEED,
) -> int:
    """Spark SQL ``hash(c1, c2, ...)`` of one row, a signed int32.

    The running value starts at ``seed`` (an int32 or uint32 bit pattern); each non-null column
    replaces it with ``Murmur3_x86_32(column bytes, running value)``, the Spark tail applying to
    strings (ints and longs are whole words, where both tails agree); a null (``None``) leaves it
    unchanged.
    """
    _check_row(values, types)
    if not -(1 << 31) <= seed <= _MASK32:
        raise ValueError(f"Spark hash seed must be an int32 or uint32: got {seed}")
    h = seed & _MASK32
    for value, type_ in zip(values, types, strict=True):
        if value is not None:
            h = murmur3_32(spark_column_bytes(value, type_), h, tail="spark")
    return _signed(h, 32)


def spark_xxhash64_row(
    values: Sequence[int | str | bytes | None],
    types: Sequence[str],
    xxh64: Callable[[bytes, int], int],
    seed: int = SPARK_HASH_SEED,
) -> int:
    """Spark SQL ``xxhash64(c1, c2, ...)`` of one row, a signed int64.

    Chained like :func:`spark_hash_row` with XXH64 (Spark's ``XXH64`` is the standard algorithm),
    the running value a 64-bit seed. ``xxh64(data, seed) -> uint64`` is passed in (normally
    ``offload.golden.xxh64``) so this module imports nothing of offload.
    """
    _check_row(values, types)
    if not -(1 << 63) <= seed <= _MASK64:
        raise ValueError(f"Spark xxhash64 seed must be an int64 or uint64: got {seed}")
    h = seed & _MASK64
    for value, type_ in zip(values, types, strict=True):
        if value is not None:
            h = xxh64(spark_column_bytes(value, type_), h) & _MASK64
    return _signed(h, 64)
