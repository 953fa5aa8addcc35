"""The deterministic inputs of the reference vectors (stdlib only).

This module is imported by the tests (``tests.reference.inputs``) and, by file path, by the
generator ``make_vectors.py`` running inside throwaway virtual environments with another set of
packages: it must stay free of imports outside the standard library. The JSON files name the input
sets of :data:`INPUT_SETS` instead of storing them, with a sha256 (:func:`digest`) of each, so a
change here that would silently re-pair inputs with old expected values fails the tests.

Byte pattern
    ``stream(n)`` is the first ``n`` bytes of a 32-bit linear congruential generator
    ``x = (1664525 * x + 1013904223) mod 2**32`` (Numerical Recipes' constants) started at
    ``x = 0x9E3779B9``, each byte being the top 8 bits of the state after the step (the low bits of
    an LCG modulo 2**32 have short periods). ``lengths_bytes(n) == stream(n)``: shorter inputs are
    prefixes of longer ones, as in the xxHash and CityHash test programs. Every byte value 0..255
    occurs within the first 1200 bytes (so in the inputs of 4096 and 65537 bytes; checked by
    tests/test_reference_vectors.py), and about half of the bytes are >= 0x80, which is what catches
    sign-extension bugs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence

# A value of an input set: bytes (hash inputs), str (Spark StringType), int, None (a null), or a
# tuple of those (one row of Spark columns).
Value = bytes | str | int | None | tuple["Value", ...]

LCG_MUL = 1664525
LCG_ADD = 1013904223
LCG_START = 0x9E3779B9

# Every length 0..300 covers every length path of FarmHash (0-4, 5-8, 9-16, 17-32, 33-64, 65+ with
# 64-byte blocks) and CityHash (0-16, 17-32, 33-64, 65+), each several times, and every tail of
# Murmur3's 4-byte blocks; then block edges and long inputs.
LENGTHS: list[int] = list(range(0, 301)) + [511, 512, 1000, 1024, 4096, 65537]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1

# the seeds of random.Random for the random members of the sets below (fixed: the sets are data)
RANDOM_SEED = 20240516


def stream(n: int) -> bytes:
    """The first ``n`` bytes of the LCG byte stream described in the module docstring."""
    if n < 0:
        raise ValueError(f"length must be >= 0, got {n}")
    out = bytearray(n)
    x = LCG_START
    for i in range(n):
        x = (LCG_MUL * x + LCG_ADD) & 0xFFFFFFFF
        out[i] = x >> 24
    return bytes(out)


def lengths_bytes(n: int) -> bytes:
    """The byte input of length ``n``: ``stream(n)``."""
    return stream(n)


def ascii_string(n: int) -> str:
    """A printable-ASCII string of ``n`` characters (for Spark StringType columns, which must be
    valid UTF-8): byte ``b`` of ``stream(n)`` becomes ``chr(0x20 + b % 95)``."""
    return "".join(chr(0x20 + b % 95) for b in stream(n))


# Strings with multi-byte UTF-8 (1, 2, 3 and 4 bytes per code point), NULs inside, the empty
# string, and runs of multi-byte characters whose UTF-8 lengths cross 4/8/16/32 byte boundaries.
_SPECIAL_STRINGS: list[str] = [
    "",
    "a",
    "é",
    "中文",
    "😀",
    "\x00",
    "a\x00b",
    "\x00\x00\x00\x00",
    "hello",
    "hello world",
    "US|ios",
    "café",
    "naïve façade",
    "日本語のテキスト",
    "emoji 😀🎉👍🏽 mix",
    "👨‍👩‍👧‍👦",
    "Ünïcödé\x00with\x00nul",
    "\u00ff\u0100\u07ff\u0800\uffff\U00010000\U0010ffff",
    "42",
    "-1",
    " ",
]
# characters of 1, 2, 3 and 4 UTF-8 bytes for the generated mixed strings
_ALPHABET = "aZ0~éßΩж中文語😀🎉"


def utf8_strings() -> list[str]:
    """The special strings, then runs ``c * k`` of a 2-, 3- and 4-byte character for k in 1..20,
    then 40 mixed strings of 1..40 characters drawn from a small alphabet by a seeded RNG."""
    out = list(_SPECIAL_STRINGS)
    for c in ("é", "中", "😀"):
        out.extend(c * k for k in range(1, 21))
    rng = random.Random(RANDOM_SEED)
    out.extend("".join(rng.choice(_ALPHABET) for _ in range(k)) for k in range(1, 41))
    return out


def byte_inputs() -> list[bytes]:
    """Input set ``bytes``: ``lengths_bytes(n)`` for every n in :data:`LENGTHS`, then the UTF-8
    encoding of every string of :func:`utf8_strings`."""
    return [lengths_bytes(n) for n in LENGTHS] + [s.encode("utf-8") for s in utf8_strings()]


def byte_inputs_nonempty() -> list[bytes]:
    """Input set ``bytes_nonempty``: :func:`byte_inputs` without the empty strings (TF's
    ``categorical_column_with_hash_bucket`` treats ``b""`` as missing and emits no id for it)."""
    return [b for b in byte_inputs() if b]


def _around_powers_of_ten(limit: int) -> list[int]:
    out: list[int] = []
    for k in range(1, 19):
        p = 10**k
        out.extend(v for v in (p - 1, p, p + 1, -p + 1, -p, -p - 1) if -limit - 1 <= v <= limit)
    return out


def _unique(values: list[int]) -> list[int]:
    return list(dict.fromkeys(values))


def int32_values() -> list[int]:
    """Input set ``int32``: 0, +-1, small edges, 42, int32 min/max, powers of ten +-1 that fit,
    then 32 random int32 (seeded)."""
    edges = [0, 1, -1, 2, -2, 7, 42, 127, 128, -128, -129, 255, 256, 32767, 32768, -32768, 65535, 65536]
    edges += [INT32_MAX, INT32_MIN, INT32_MAX - 1, INT32_MIN + 1]
    rng = random.Random(RANDOM_SEED + 32)
    rand = [rng.randint(INT32_MIN, INT32_MAX) for _ in range(32)]
    return _unique(edges + _around_powers_of_ten(INT32_MAX) + rand)


def int64_values() -> list[int]:
    """Input set ``int64``: the int32 set, values just outside int32, 2**32, 2**53 +-1, int64
    min/max, powers of ten +-1 up to 10**18, then 32 random int64 (seeded)."""
    edges = [2**31, -(2**31) - 1, 2**32 - 1, 2**32, -(2**32), 2**53 - 1, 2**53, 2**53 + 1]
    edges += [INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1]
    rng = random.Random(RANDOM_SEED + 64)
    rand = [rng.randint(INT64_MIN, INT64_MAX) for _ in range(32)]
    return _unique(int32_values() + edges + _around_powers_of_ten(INT64_MAX) + rand)


def int64_values_not_minus1() -> list[int]:
    """Input set ``int64_not_minus1``: :func:`int64_values` without -1 (the missing value of an
    integer ``categorical_column_with_hash_bucket``)."""
    return [v for v in int64_values() if v != -1]


def sigrid_salts() -> list[int]:
    """Salts of sigrid_hash (int64): edges, then one random int64 (seeded)."""
    rng = random.Random(RANDOM_SEED + 9)
    return [0, 1, 42, -1, INT64_MIN, INT64_MAX, rng.randint(INT64_MIN, INT64_MAX)]


def sigrid_max_values() -> list[int]:
    """max_value of sigrid_hash (int64 > 0): 1 (always 0), small ones, 100 (TorchArrow's tests), the
    32-bit edges, a prime, 2**62 + 1, int64 max, then one random one (seeded)."""
    rng = random.Random(RANDOM_SEED + 10)
    edges = [1, 2, 3, 7, 100, 1000, 2**31 - 1, 2**32 + 15, 10**9 + 7, 2**62 + 1, INT64_MAX]
    return edges + [rng.randint(2, INT64_MAX)]


def murmur3_seeds() -> list[int]:
    """Seeds of MurmurHash3_x86_32 (uint32): edges, then 2 random ones (seeded)."""
    rng = random.Random(RANDOM_SEED + 3)
    return [0, 1, 42, 2**31 - 1, 2**31, 2**32 - 1] + [rng.getrandbits(32) for _ in range(2)]


def cityhash_seeds() -> list[int]:
    """Seeds of CityHash64WithSeed (uint64): edges, then 3 random ones (seeded)."""
    rng = random.Random(RANDOM_SEED + 6)
    return [0, 1, 42, 2**63, UINT64_MAX] + [rng.getrandbits(64) for _ in range(3)]


def _with_nulls(rows: list[tuple[Value, ...]]) -> list[tuple[Value, ...]]:
    """The rows with an all-null row first, in the middle and last (nulls "some", at fixed places)."""
    null: tuple[Value, ...] = tuple(None for _ in rows[0])
    mid = len(rows) // 2
    return [null] + rows[:mid] + [null] + rows[mid:] + [null]


def spark_string_rows() -> list[tuple[Value, ...]]:
    """Input set ``spark_string``: one StringType column: ``ascii_string(n)`` for n in 0..300, then
    :func:`utf8_strings`, with nulls (see ``_with_nulls``)."""
    strings = [ascii_string(n) for n in range(301)] + utf8_strings()
    return _with_nulls([(s,) for s in strings])


def spark_int32_rows() -> list[tuple[Value, ...]]:
    """Input set ``spark_int32``: one IntegerType column of :func:`int32_values`, with nulls."""
    return _with_nulls([(v,) for v in int32_values()])


def spark_int64_rows() -> list[tuple[Value, ...]]:
    """Input set ``spark_int64``: one LongType column of :func:`int64_values`, with nulls."""
    return _with_nulls([(v,) for v in int64_values()])


def spark_mixed_rows() -> list[tuple[Value, ...]]:
    """Input set ``spark_mixed``: rows of (IntegerType, LongType, StringType): edges, nulls in the
    middle column, single nulls elsewhere, and an all-null row."""
    i32 = int32_values()[:24]
    i64 = int64_values()[-24:]
    strs = _SPECIAL_STRINGS[:12] + [ascii_string(n) for n in (3, 4, 5, 8, 15, 16, 17, 31, 32, 33, 64, 100)]
    rows: list[tuple[Value, ...]] = [(a, b, s) for a, b, s in zip(i32, i64, strs)]
    rows += [(a, None, s) for a, s in zip(i32[:8], strs[:8])]
    rows += [(None, 7, "x"), (7, 7, None), (None, None, "abc"), (1, None, None), (None, None, None)]
    return rows


def spark_int_string_rows() -> list[tuple[Value, ...]]:
    """Input set ``spark_int_string``: rows of (StringType, IntegerType) - a string column first
    and its hash seeding an int column - with nulls in either."""
    rows: list[tuple[Value, ...]] = [(s, v) for s, v in zip(_SPECIAL_STRINGS, int32_values())]
    rows += [(None, 5), ("a", None), (None, None)]
    return rows


INPUT_SETS: dict[str, Callable[[], Sequence[Value]]] = {
    "bytes": byte_inputs,
    "bytes_nonempty": byte_inputs_nonempty,
    "int32": int32_values,
    "int64": int64_values,
    "int64_not_minus1": int64_values_not_minus1,
    "murmur3_seeds": murmur3_seeds,
    "cityhash_seeds": cityhash_seeds,
    "sigrid_salts": sigrid_salts,
    "sigrid_max_values": sigrid_max_values,
    "spark_string": spark_string_rows,
    "spark_int32": spark_int32_rows,
    "spark_int64": spark_int64_rows,
    "spark_mixed": spark_mixed_rows,
    "spark_int_string": spark_int_string_rows,
}


def input_set(name: str) -> list[Value]:
    """The values of the input set ``name`` (a key of :data:`INPUT_SETS`)."""
    if name not in INPUT_SETS:
        raise KeyError(f"unknown input set {name!r}; known: {', '.join(INPUT_SETS)}")
    return list(INPUT_SETS[name]())


def _encode(value: Value, out: list[bytes]) -> None:
    # a self-delimiting encoding (type tag, length, payload): independent of repr(), whose output
    # for str depends on the Unicode database of the Python version
    if value is None:
        out.append(b"n")
    elif isinstance(value, bool):
        raise TypeError("bool is not an input value")
    elif isinstance(value, int):
        out.append(b"i%d;" % value)
    elif isinstance(value, bytes):
        out.append(b"b%d;" % len(value) + value)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(b"s%d;" % len(data) + data)
    elif isinstance(value, tuple):
        out.append(b"t%d;" % len(value))
        for item in value:
            _encode(item, out)
    else:
        raise TypeError(f"not an input value: {type(value).__name__}")


def digest(values: Sequence[Value]) -> str:
    """The sha256 (hex) of a list of values, stored in the JSON next to the name of each set."""
    parts: list[bytes] = [b"%d;" % len(values)]
    for v in values:
        _encode(v, parts)
    return hashlib.sha256(b"".join(parts)).hexdigest()
