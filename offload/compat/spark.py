"""Spark SQL's row hashes: ``pyspark.sql.functions.hash(*cols)`` and ``xxhash64(*cols)``.

Spark hashes a row column by column with seed 42: the running value starts at 42, each non-null
column replaces it with ``Murmur3_x86_32(column bytes, running value)`` (``hash``) or
``XXH64(column bytes, running value)`` (``xxhash64``), and a null leaves it unchanged (an
all-null row hashes to 42). IntegerType is hashed as its 4 little-endian bytes, LongType as its
8, StringType (and BinaryType) as its bytes, Murmur3 with Spark's own string tail (each trailing
byte sign-extended and given a full round). ``hash`` returns a signed int32, ``xxhash64`` a
signed int64.

The column types come from the arrays: numpy or pyarrow int32 is IntegerType, int64 is LongType,
strings (numpy ``str``/``bytes``/object arrays, sequences of ``str``/``bytes``, pyarrow
string/large_string/binary/large_binary, dictionary-encoded or not) are StringType; pyarrow nulls,
``None`` elements and masked numpy elements are nulls.

Where it runs: the first column is one ``offload.murmur3_32(col, seed=42, tail="spark")`` or
``offload.xxh64(col, seed=42)`` call on the runtime (``backend=`` and ``verify=`` apply to it;
nulls are hashed as a placeholder and set back to 42). Every later column needs a different seed
per row, which no device operator takes, so the chain continues on the CPU kernels of
``offload.host.cpu.kernels_chain`` whatever the backend. ``verify`` ("sample" or "full") then
compares sampled or all rows with the golden row models of ``offload.golden_murmur3``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from offload import golden
from offload.backend import BitExactError
from offload.batch import as_records
from offload.compat import arrow_nulls, arrow_type, describe, is_arrow, read_text, runtime_of, verify_mode
from offload.golden_murmur3 import SPARK_HASH_SEED, spark_hash_row, spark_xxhash64_row
from offload.host.cpu.kernels_chain import (
    murmur3_chain_fixed,
    murmur3_chain_var,
    xxh64_chain_fixed,
    xxh64_chain_var,
)
from offload.runtime import BackendChoice, Runtime, VerifyMode

__all__ = ["hash", "xxhash64"]

_KINDS = {np.dtype(np.int32): "int", np.dtype(np.int64): "long"}
_EXPECTED = "expected int32 (IntegerType), int64 (LongType) or strings (StringType)"
#: picks the rows verify="sample" checks (the runtime's sample_size of them)
_rng = random.Random()


@dataclass(frozen=True)
class _Column:
    """One column read for hashing. ``type``: ``"int"``, ``"long"`` or ``"string"`` (the golden
    row models' names). Ints: ``keys`` int32/int64, nulls holding 0; strings: ``offsets`` int64
    from 0 and ``data`` uint8, nulls empty. ``nulls``: None when there are none."""

    type: str
    n: int
    nulls: np.ndarray | None
    keys: np.ndarray | None = None
    offsets: np.ndarray | None = None
    data: np.ndarray | None = None

    def batch(self) -> Any:
        """The column as a batch of the runtime."""
        return self.keys if self.keys is not None else (self.offsets, self.data)

    def valid(self) -> np.ndarray:
        return np.ones(self.n, bool) if self.nulls is None else ~self.nulls

    def value(self, i: int) -> int | bytes | None:
        """Row ``i`` as the golden models take it."""
        if self.nulls is not None and self.nulls[i]:
            return None
        if self.keys is not None:
            return int(self.keys[i])
        assert self.offsets is not None and self.data is not None
        return self.data[int(self.offsets[i]) : int(self.offsets[i + 1])].tobytes()


def hash(
    *columns: Any,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """``pyspark.sql.functions.hash(*columns)`` of each row: int32 (signed), one per row."""
    return _hash_rows("hash", columns, backend, verify, runtime).view(np.int32)


def xxhash64(
    *columns: Any,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """``pyspark.sql.functions.xxhash64(*columns)`` of each row: int64 (signed), one per row."""
    return _hash_rows("xxhash64", columns, backend, verify, runtime).view(np.int64)


def _hash_rows(
    kind: str,
    columns: Sequence[Any],
    backend: BackendChoice,
    verify: VerifyMode | None,
    runtime: Runtime | None,
) -> np.ndarray:
    """The running values after every column: uint32 (``hash``) or uint64 (``xxhash64``)."""
    who = f"spark.{kind}"
    if not columns:
        raise TypeError(f"{who}() needs at least one column (Spark refuses {kind}() without arguments)")
    cols = [_read(c, k, who) for k, c in enumerate(columns)]
    for k, c in enumerate(cols[1:], 1):
        if c.n != cols[0].n:
            raise ValueError(
                f"{who}: columns differ in length: column 0 has {cols[0].n} rows, column {k} has {c.n}"
            )
    rt = runtime_of(runtime, who)
    first = cols[0]
    if kind == "hash":
        h = rt.murmur3_32(first.batch(), seed=SPARK_HASH_SEED, tail="spark", backend=backend, verify=verify)
    else:
        h = rt.xxh64(first.batch(), seed=SPARK_HASH_SEED, backend=backend, verify=verify)
    h = np.array(h, copy=True)  # the chain updates it in place
    if first.nulls is not None:
        h[first.nulls] = SPARK_HASH_SEED
    for c in cols[1:]:
        _chain(kind, c, h)
    mode = verify_mode(rt, verify)
    if mode != "off" and first.n:
        _check(kind, cols, h, mode, rt.sample_size)
    return h


def _chain(kind: str, col: _Column, seeds: np.ndarray) -> None:
    """One more column on the running values (per-row seeds: CPU kernels only)."""
    valid = col.valid()
    if col.keys is not None:
        fixed = murmur3_chain_fixed if kind == "hash" else xxh64_chain_fixed
        fixed(col.keys, valid, seeds)
    else:
        var = murmur3_chain_var if kind == "hash" else xxh64_chain_var
        var(col.offsets, col.data, valid, seeds)


def _check(kind: str, cols: list[_Column], h: np.ndarray, mode: str, sample_size: int) -> None:
    """Rows compared with the golden row model: every row (``"full"``) or a random sample."""
    n = cols[0].n
    rows = range(n) if mode == "full" else sorted(_rng.sample(range(n), min(sample_size, n)))
    types = [c.type for c in cols]
    row_hash: Callable[[list[Any]], int]
    if kind == "hash":
        row_hash, bits = (lambda vals: spark_hash_row(vals, types)), 32
    else:
        row_hash, bits = (lambda vals: spark_xxhash64_row(vals, types, golden.xxh64)), 64
    for i in rows:
        vals = [c.value(i) for c in cols]
        expected = row_hash(vals)
        got = int(h[i])
        got -= (got >> (bits - 1)) << bits  # signed, as Spark returns it
        if got != expected:
            raise BitExactError(
                f"spark.{kind} differs from the golden row model at row {i}: values {vals!r} "
                f"({', '.join(types)}), expected {expected}, got {got}",
                backend="cpu",
                op=f"spark.{kind}",
                index=i,
                record=tuple(vals),
                expected=expected,
                got=got,
            )


# ---------------------------------------------------------------------------------------------
# Reading a column
# ---------------------------------------------------------------------------------------------


def _read(col: Any, k: int, who: str) -> _Column:
    if isinstance(col, np.ndarray):
        return _read_numpy(col, k, who)
    if is_arrow(col):
        return _read_arrow(col, k, who)
    if isinstance(col, (list, tuple)):
        if _text_items(col):
            return _text(col, k, who)
        if any(type(v) is int for v in col):
            raise TypeError(
                f"{who}: column {k} is a {type(col).__name__} of int: Spark hashes IntegerType and "
                "LongType differently, pass a numpy int32 or int64 array"
            )
    raise TypeError(f"{who}: column {k} is a {describe(col)}: {_EXPECTED}")


def _read_numpy(col: np.ndarray, k: int, who: str) -> _Column:
    if col.ndim != 1:
        raise ValueError(f"{who}: column {k} must be 1-D, got shape {col.shape}")
    nulls = np.ma.getmaskarray(col).copy() if isinstance(col, np.ma.MaskedArray) else None
    if nulls is not None and not nulls.any():
        nulls = None
    data = np.ma.getdata(col)
    if data.dtype.kind in "iu" and data.dtype.newbyteorder("=") in _KINDS:
        keys = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))
        if nulls is not None:
            keys = np.where(nulls, 0, keys).astype(keys.dtype)
        return _Column(_KINDS[keys.dtype], keys.shape[0], nulls, keys=keys)
    if data.dtype.kind == "O" and not _text_items(data.reshape(-1).tolist()):
        raise TypeError(f"{who}: column {k} is a numpy object array of non-strings: {_EXPECTED}")
    if data.dtype.kind in "USO":
        if nulls is None:
            return _text(data, k, who)
        items = [None if m else v for v, m in zip(data.tolist(), nulls.tolist(), strict=True)]
        return _text(items, k, who)
    raise TypeError(f"{who}: column {k} is a {describe(col)}: {_EXPECTED}")


def _read_arrow(col: Any, k: int, who: str) -> _Column:
    import pyarrow as pa

    t = arrow_type(col)
    if pa.types.is_null(t):  # Spark's NullType: every row is null and skipped
        return _Column("int", len(col), np.ones(len(col), bool), keys=np.zeros(len(col), np.int32))
    if t in (pa.int32(), pa.int64()):
        if pa.types.is_dictionary(col.type):
            col = col.cast(t)
        nulls = arrow_nulls(col)
        keys = np.ascontiguousarray(col.fill_null(0).to_numpy(zero_copy_only=False))
        return _Column(_KINDS[keys.dtype], keys.shape[0], nulls, keys=keys)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        return _text(col, k, who)
    raise TypeError(f"{who}: column {k} is a {describe(col)}: {_EXPECTED}")


def _text_items(items: Sequence[Any]) -> bool:
    return all(v is None or isinstance(v, (str, bytes, bytearray, memoryview)) for v in items)


def _text(col: Any, k: int, who: str) -> _Column:
    text = read_text(col, f"{who}: column {k}", nulls_allowed=True)
    offsets, data = as_records(text.records).contiguous()  # type: ignore[union-attr]
    return _Column(
        "string", offsets.shape[0] - 1, text.nulls, offsets=np.asarray(offsets, np.int64), data=data
    )
