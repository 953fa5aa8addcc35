"""Golden model of TorchArrow's ``functional.sigrid_hash`` on int64 ids (the SigridHash of Meta's
recommendation preprocessing), standard library only.

Written from TorchArrow's Velox UDF (``csrc/velox/functions/rec/sigrid_hash.h``:
``computeSigridHash`` and ``sigridHash::callNullFree``) and folly's ``folly/hash/Hash.h``
(``twang_mix64``, ``hash_128_to_64``, ``hash_combine`` with ``StdHasher``). For an id ``value``,
a ``salt`` (both int64) and ``max_value`` (int64):

1. ``max_value <= 0`` is refused (Velox: ``VELOX_USER_CHECK_GT(maxValue, 0, "maxValue must be
   larger than 0.")``), and so is anything outside int64.
2. ``max_value == 1`` gives 0, without hashing.
3. ``hashed = hash_128_to_64(salt, twang_mix64(value))`` read as a signed int64. This is
   ``folly::hash::hash_combine(salt, twang_mix64(value))``: ``hash_combine`` hashes each argument
   with ``std::hash``, the identity on 64-bit integers (libstdc++ and libc++), and combines
   ``(first, rest)`` with ``hash_128_to_64(first, rest)``; int64 arguments are taken as their
   uint64 bit patterns.
4. The result is the *floor* modulo ``hashed mod max_value``, in ``[0, max_value)`` even for a
   negative ``hashed``. Velox computes it with a multiply-high by a precomputed magic number
   (``computeMultiperAndShift(maxValue, 63)``, sign-symmetric around ``sign ^ hashed``);
   ``tests/test_murmur3_sigrid.py`` models those steps literally and checks them equal to Python's
   ``%`` on every power-of-two edge and at the largest quotients.

So the result is in ``[0, max_value)`` for every valid input, e.g. salt 0, max_value 100, ids
0..15 give 6, 60, 54, 54, 9, 4, 91, 11, 67, 79, 2, 25, 92, 98, 83, 66 (TorchArrow's unit tests).
"""

from __future__ import annotations

__all__ = [
    "HASH128_KMUL",
    "INT64_MAX",
    "INT64_MIN",
    "hash_128_to_64",
    "sigrid_hash",
    "sigrid_hash_raw",
    "twang_mix64",
]

_MASK64 = (1 << 64) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# folly hash_128_to_64 (CityHash's Hash128to64) multiplier.
HASH128_KMUL = 0x9DDFEA08EB382D69


def twang_mix64(key: int) -> int:
    """Thomas Wang's 64-bit mix (folly ``twang_mix64``) of a uint64 bit pattern."""
    key &= _MASK64
    key = ((~key) + (key << 21)) & _MASK64  # key * (2**21 - 1) - 1
    key ^= key >> 24
    key = (key + (key << 3) + (key << 8)) & _MASK64  # key * 265
    key ^= key >> 14
    key = (key + (key << 2) + (key << 4)) & _MASK64  # key * 21
    key ^= key >> 28
    return (key + (key << 31)) & _MASK64  # key * (2**31 + 1)


def hash_128_to_64(upper: int, lower: int) -> int:
    """folly ``hash_128_to_64(upper, lower)`` (CityHash's Hash128to64) on uint64 bit patterns."""
    upper &= _MASK64
    lower &= _MASK64
    a = ((lower ^ upper) * HASH128_KMUL) & _MASK64
    a ^= a >> 47
    b = ((upper ^ a) * HASH128_KMUL) & _MASK64
    b ^= b >> 47
    return (b * HASH128_KMUL) & _MASK64


def _check_int64(name: str, v: int) -> None:
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError(f"sigrid_hash {name} must be an int64: got {v}")


def sigrid_hash_raw(value: int, salt: int) -> int:
    """Step 3: the signed int64 ``hash_combine(salt, twang_mix64(value))`` before the modulo."""
    h = hash_128_to_64(salt, twang_mix64(value))
    return h - (1 << 64) if h >> 63 else h


def sigrid_hash(value: int, salt: int, max_value: int) -> int:
    """TorchArrow ``sigrid_hash(value, salt, max_value)`` of one int64 id (module docstring)."""
    _check_int64("value", value)
    _check_int64("salt", salt)
    _check_int64("max_value", max_value)
    if max_value <= 0:
        raise ValueError(f"sigrid_hash max_value must be larger than 0: got {max_value}")
    if max_value == 1:
        return 0
    return sigrid_hash_raw(value, salt) % max_value  # Python's % is the floor modulo
