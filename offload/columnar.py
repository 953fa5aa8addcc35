"""Columns around the operators: dictionary columns, the null policy of a call, the output form.

:func:`prepare` reads a call's column (every batch form of docs/operators.md, pyarrow arrays and
chunked arrays of every type an operator takes) into :class:`Prepared`: the batch the backends run
and how the result rows come from the batch's results. :func:`finish` makes those rows, as numpy
(the default) or pyarrow (``output="arrow"``).

* A **dictionary** column runs on its dictionary only (each distinct value once, and the only
  thing that travels to a device); row ``i`` takes the result of ``indices[i]``:
  ``result = op(dictionary)[indices]``. It applies to every operator whose result is one value
  per record; the sequence codec reads a dictionary column as its values.
* **Nulls** (Arrow nulls, ``None`` elements, masked numpy elements) follow the call's policy:
  ``nulls="error"`` refuses them (naming the first), ``nulls="null"`` gives a null result there,
  any other value replaces them. The records under a null are run like the others (their result
  is dropped): nothing is copied to skip them. A replacement is run once, as one more record of
  the batch, and the null rows take its result; the sequence codec (its result is not one value
  per record) has the replacement, or an empty record, written into its input instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from offload import batch as _batch
from offload.backend import Batch, Result
from offload.batch import FixedKeys, Numbers, Sequences, VarChunk, VarRecords
from offload.ops import Operator, representable

__all__ = ["Prepared", "Output", "OUTPUTS", "prepare", "finish", "check_output", "null_policy"]

#: ``output=``: numpy arrays (the default), or pyarrow arrays.
Output = Literal["numpy", "arrow"]
OUTPUTS = ("numpy", "arrow")
_POLICIES = ("error", "null")


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 us a call
class Prepared:
    """A call's batch and how its result rows are made from the batch's results.

    ``rows``: result rows; ``shape``: the numpy result's shape; ``take``: row -> record of the
    batch (a dictionary's indices), or None (row i is record i); ``nulls``: the null rows, or
    None; ``policy``: ``"error"``, ``"null"`` or ``"fill"``; ``fill``: the record of the batch
    holding the replacement (the null rows of a one-value-per-record operator take its result).
    """

    batch: Batch
    rows: int
    shape: tuple[int, ...]
    take: np.ndarray | None = None
    nulls: np.ndarray | None = None
    policy: str = "error"
    fill: int | None = None


def check_output(output: Any) -> str:
    if not isinstance(output, str):
        raise TypeError(f"output must be a str, got {type(output).__name__}")
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}: expected 'numpy' or 'arrow'")
    return output


def null_policy(nulls: Any) -> tuple[str, Any]:
    """``("error" | "null", None)`` or ``("fill", replacement)``; the replacement's type is
    checked against the column (:func:`prepare`)."""
    if isinstance(nulls, str) and nulls in _POLICIES:
        return nulls, None
    if nulls is None:
        raise TypeError('nulls must be "error", "null" or a replacement value, got None')
    return "fill", nulls


# ---------------------------------------------------------------------------------------------
# reading a column
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Column:
    batch: Batch
    nulls: np.ndarray | None
    take: np.ndarray | None
    dtype: np.dtype | None  # the keys' or numbers' dtype (None: byte records or sequences)


def _read(entry: Operator, values: Any, masked_ok: bool) -> _Column:
    if _batch.is_arrow(values) and _is_dictionary(values):
        if entry.result_dtype is not None:
            return _dictionary(entry, values)
        values = values.cast(values.type.value_type)  # the sequence codec reads the values
    kind = entry.inputs
    if kind == "records":
        records, nulls, dtype = _batch.read_records(values, masked_ok)
        return _Column(records, nulls, None, dtype)
    if kind == "numbers":
        numbers, nulls = _batch.read_numbers(values, entry.name, masked_ok)
        return _Column(numbers, nulls, None, numbers.values.dtype)
    if kind == "sequences":
        seqs, nulls = _batch.read_sequences(values)
        return _Column(seqs, nulls, None, None)
    encoded, nulls = _batch.read_encoded(values)
    return _Column(encoded, nulls, None, None)


def _is_dictionary(values: Any) -> bool:
    import pyarrow as pa

    return isinstance(values, (pa.Array, pa.ChunkedArray)) and pa.types.is_dictionary(values.type)


def _dictionary(entry: Operator, values: Any) -> _Column:
    """The dictionary as the batch, the indices as ``take``; a row is null where its index is,
    or where the dictionary value it points at is."""
    dictionary, indices, nulls = _dictionary_parts(values)
    inner = _read(entry, dictionary, True)
    if inner.nulls is not None and indices.shape[0]:
        safe = indices if nulls is None else np.where(nulls, 0, indices)
        pointed = inner.nulls[safe]
        nulls = pointed if nulls is None else nulls | pointed
    return _Column(inner.batch, nulls if nulls is not None and nulls.any() else None, indices, inner.dtype)


def _dictionary_parts(values: Any) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """``(dictionary, indices, index nulls)`` of a dictionary Array or ChunkedArray; the chunks
    of a chunked array share one dictionary (unified when theirs differ)."""
    import pyarrow as pa

    chunks = list(values.chunks) if isinstance(values, pa.ChunkedArray) else [values]
    if not chunks:
        return pa.array([], values.type.value_type), np.zeros(0, np.int64), None
    first = chunks[0].dictionary
    if any(not c.dictionary.equals(first) for c in chunks[1:]):
        chunks = list(pa.chunked_array(chunks, values.type).unify_dictionaries().chunks)
        first = chunks[0].dictionary
    index_dtype = np.dtype(values.type.index_type.to_pandas_dtype())
    parts = [_batch._arrow_data(c.indices, index_dtype) for c in chunks]
    indices = parts[0] if len(parts) == 1 else np.concatenate(parts)
    nulls = _batch._concat_nulls([(len(c), _batch.arrow_nulls(c.indices)) for c in chunks])
    return first, indices, nulls


# ---------------------------------------------------------------------------------------------
# the null policy
# ---------------------------------------------------------------------------------------------


def prepare(entry: Operator, values: Any, nulls: Any = "error", output: str = "numpy") -> Prepared:
    """Read a call's column and apply its null policy (exact errors; nothing runs yet)."""
    if type(values) is np.ndarray and type(nulls) is str and nulls == "error" and entry.inputs == "records":
        # the common call, numpy keys under the default policy: nothing to do around the batch
        records, found, _ = _batch.read_records(values)
        if found is not None:  # None in an object array
            raise _batch.null_error(int(np.flatnonzero(found)[0]))
        return Prepared(records, records.n, records.shape)
    policy, replacement = null_policy(nulls)
    if policy == "null" and entry.result_dtype is None and output == "numpy":
        pair = "(offsets, data)" if entry.result == "encoded" else "(value_offsets, values)"
        raise ValueError(
            f'nulls="null" needs output="arrow" for {entry.name}: its numpy result, an {pair} '
            "pair, cannot hold a null"
        )
    col = _read(entry, values, masked_ok=policy != "error")
    if col.nulls is not None and policy == "error":
        raise _batch.null_error(int(np.flatnonzero(col.nulls)[0]))
    extra = _replacement(entry, col, replacement) if policy == "fill" else None
    return _applied(entry, col, policy, extra)


def _applied(entry: Operator, col: _Column, policy: str, extra: Batch | None) -> Prepared:
    """The policy applied to a column's nulls: the codec gets ``extra`` (or an empty record)
    written into its input; other operators get ``extra`` as one more record, taken by the null
    rows (without it the null rows take any record: their results are masked)."""
    rows = col.batch.n if col.take is None else int(col.take.shape[0])
    shape = col.batch.shape if col.take is None else (rows,)
    found = col.nulls
    if found is None or policy == "error":
        return Prepared(col.batch, rows, shape, col.take, None, policy)
    if entry.result_dtype is None:
        return Prepared(_splice(col.batch, found, extra), rows, shape, None, found, policy)
    batch, fill = col.batch, None
    if extra is not None:
        batch = _extend(batch, extra)
        fill = batch.n - 1
    take = None if col.take is None else np.where(found, 0 if fill is None else fill, col.take)
    return Prepared(batch, rows, shape, take, found, policy, fill)


def _replacement(entry: Operator, col: _Column, value: Any) -> Batch:
    """The replacement as a one-record batch of the column's kind, or the exact error."""
    kind = entry.inputs
    if kind == "records" and isinstance(col.batch, FixedKeys):
        dtype = col.dtype if col.dtype is not None else col.batch.keys.dtype
        v = _int_of(value, dtype)
        return FixedKeys(np.array([v], dtype).view(col.batch.keys.dtype), (1,))
    if kind in ("records", "encoded"):
        return _bytes_record(value, kind == "encoded", entry.name)
    if kind == "numbers":
        assert col.dtype is not None
        return Numbers(np.array([_number_of(value, col.dtype, entry.name)], col.dtype), (1,))
    vals = _sequence_of(value)
    return Sequences(np.array([0, vals.shape[0]], np.int64), vals)


def _int_of(value: Any, dtype: np.dtype) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"nulls: the replacement for a column of {dtype} keys must be an int, got {type(value).__name__}"
        )
    info, v = np.iinfo(dtype), int(value)
    if not info.min <= v <= info.max:
        raise ValueError(f"nulls: the replacement {v} is outside the column's {dtype} range")
    return v


def _bytes_record(value: Any, encoded: bool, op: str) -> VarRecords:
    if isinstance(value, str) and not encoded:
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"nulls: the replacement is not encodable as UTF-8: {e.reason}") from None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        what = f"bytes (an encoded sequence) for {op}" if encoded else "a str or bytes for byte records"
        raise TypeError(f"nulls: the replacement must be {what}, got {type(value).__name__}")
    return VarRecords((VarChunk(np.array([0, len(raw)], np.int64), np.frombuffer(raw, np.uint8)),))


def _number_of(value: Any, dtype: np.dtype, op: str) -> Any:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"nulls: the replacement for {op}'s {dtype} values must be a number, got {type(value).__name__}"
        )
    v = value.item() if isinstance(value, np.generic) else value
    if isinstance(v, float) and v != v:  # NaN: a float column holds it, an int column cannot
        if dtype.kind == "f":
            return v
        raise ValueError(f"nulls: the replacement {v!r} is not exactly representable in {dtype}")
    if not representable(v, dtype):
        raise ValueError(f"nulls: the replacement {v!r} is not exactly representable in {dtype}")
    return v


def _sequence_of(value: Any) -> np.ndarray:
    bad = TypeError(
        "nulls: the replacement for delta_varint_encode must be a sequence of ints (a list of int or "
        f"a 1-D int64 array), got {type(value).__name__}"
    )
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind != "i":
            raise bad
        return value.astype(np.int64)
    if not isinstance(value, (list, tuple)) or not all(type(v) is int for v in value):
        raise bad
    if not all(-(1 << 63) <= v < (1 << 63) for v in value):
        raise ValueError("nulls: the replacement sequence holds a value outside int64")
    return np.array(value, np.int64)


def _extend(batch: Batch, extra: Batch) -> Batch:
    """The batch with the replacement record appended (byte records: one more chunk, no copy)."""
    if isinstance(batch, FixedKeys) and isinstance(extra, FixedKeys):
        keys = np.concatenate([batch.keys, extra.keys])
        return FixedKeys(keys, keys.shape)
    if isinstance(batch, VarRecords) and isinstance(extra, VarRecords):
        return VarRecords(batch.chunks + extra.chunks)
    assert isinstance(batch, Numbers) and isinstance(extra, Numbers)
    values = np.concatenate([batch.values, extra.values])
    return Numbers(values, values.shape)


def _splice(batch: Batch, nulls: np.ndarray, extra: Batch | None) -> Batch:
    """An offsets + values batch with each null record replaced by ``extra``'s one record (or
    by an empty record), in one vectorised gather."""
    if isinstance(batch, Sequences):
        offsets, values = batch.value_offsets, batch.values
        repl = extra.values if isinstance(extra, Sequences) else np.zeros(0, np.int64)
    else:
        assert isinstance(batch, VarRecords)
        offsets, values = batch.contiguous()
        repl = extra.chunks[0].data if isinstance(extra, VarRecords) else np.zeros(0, np.uint8)
    n = offsets.shape[0] - 1
    lengths = np.where(nulls, repl.shape[0], np.diff(offsets))
    new_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    row = np.repeat(np.arange(n), lengths)
    start = np.where(nulls, values.shape[0], offsets[:-1])
    source = np.concatenate([values, repl])[start[row] + np.arange(row.shape[0]) - new_offsets[row]]
    if isinstance(batch, Sequences):
        return Sequences(new_offsets, source)
    return VarRecords((VarChunk(new_offsets, source),))


# ---------------------------------------------------------------------------------------------
# the result rows
# ---------------------------------------------------------------------------------------------


def finish(entry: Operator, prep: Prepared, res: Result, output: str = "numpy") -> Any:
    """The call's result from the batch's results (numpy, or pyarrow for ``output="arrow"``)."""
    if prep.policy == "error" and prep.take is None and output == "numpy":
        if isinstance(res, np.ndarray) and res.shape != prep.shape:
            return res.reshape(prep.shape)
        return res
    keep = prep.nulls if prep.policy == "null" else None
    if entry.result_dtype is None:
        assert isinstance(res, tuple)
        return res if output == "numpy" else _arrow_pair(entry, res, keep)
    assert isinstance(res, np.ndarray)
    out = res
    if prep.take is not None:
        out = res[prep.take] if res.shape[0] else np.zeros(prep.rows, res.dtype)
    elif prep.fill is not None:
        out = res[: prep.rows] if res.flags.writeable else res[: prep.rows].copy()
        out[prep.nulls] = res[prep.fill]
    if output == "arrow":
        return _arrow_values(out.reshape(-1), keep)
    if out.shape != prep.shape:
        out = out.reshape(prep.shape)
    if prep.policy == "null":
        mask = np.zeros(prep.shape, bool) if keep is None else keep.reshape(prep.shape)
        return np.ma.MaskedArray(out, mask=mask)
    return out


def _validity(keep: np.ndarray | None) -> Any:
    import pyarrow as pa

    return None if keep is None else pa.py_buffer(np.packbits(~keep, bitorder="little"))


def _arrow_values(out: np.ndarray, keep: np.ndarray | None) -> Any:
    """A pyarrow array of the result dtype over the numpy result's buffer (no copy)."""
    import pyarrow as pa

    out = np.ascontiguousarray(out)
    typ = pa.from_numpy_dtype(out.dtype)
    return pa.Array.from_buffers(typ, out.shape[0], [_validity(keep), pa.py_buffer(out)])


def _arrow_pair(entry: Operator, res: tuple[np.ndarray, np.ndarray], keep: np.ndarray | None) -> Any:
    """The encoder's ``(offsets, data)`` as a ``large_binary`` column, the decoder's
    ``(value_offsets, values)`` as a ``large_list<int64>`` column, over the same buffers."""
    import pyarrow as pa

    offsets, data = (np.ascontiguousarray(a) for a in res)
    n = offsets.shape[0] - 1
    if entry.result == "encoded":
        buffers = [_validity(keep), pa.py_buffer(offsets), pa.py_buffer(data)]
        return pa.Array.from_buffers(pa.large_binary(), n, buffers)
    mask = None if keep is None else pa.array(keep)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(data), mask=mask)
