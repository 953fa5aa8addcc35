"""Input normalisation: every batch form of docs/operators.md to one internal representation.

Every backend sees only these classes:

* :class:`FixedKeys` — numpy integer keys, one 4- or 8-byte record each, as a contiguous unsigned
  1-D view (``keys``) plus the caller's ``shape`` for the result;
* :class:`VarRecords` — byte records as one or more :class:`VarChunk` ``(offsets, data)`` pairs;
  Arrow buffers are used in place (offsets may be int32 and need not start at 0), so nothing is
  copied but the offsets of a Python ``list`` of ``bytes``;
* :class:`Numbers` — ``bucketize``'s ``x``;
* :class:`Sequences` — ``delta_varint_encode``'s int64 sequences as ``(value_offsets, values)``.

All of them can be sliced by record (``batch.slice(start, stop)``), which is how the runtime
re-runs the unfinished part of a batch on the next backend.

The ``as_*`` functions are strict: a null (an Arrow null, a ``None`` element, a masked element)
raises :func:`null_error`. The ``read_*`` functions return the batch and the null mask (one bool
per record, ``None`` when there are none; the records under a null are readable but meaningless),
for :mod:`offload.columnar`, which applies a call's null policy and dictionary encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FixedKeys",
    "VarChunk",
    "VarRecords",
    "Records",
    "Numbers",
    "Sequences",
    "as_records",
    "as_numbers",
    "as_sequences",
    "as_encoded",
    "null_error",
    "NULL_HINT",
    "read_records",
    "read_numbers",
    "read_sequences",
    "read_encoded",
    "arrow_nulls",
    "is_arrow",
    "is_column",
]

_KEY_DTYPES = {
    np.dtype(np.int32): np.uint32,
    np.dtype(np.uint32): np.uint32,
    np.dtype(np.int64): np.uint64,
    np.dtype(np.uint64): np.uint64,
}
_NUMBER_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int32), np.dtype(np.int64))
_FORMS = (
    "a numpy int32/uint32/int64/uint64 array, a sequence of bytes/bytearray/memoryview/str, "
    "a pyarrow integer, binary, string or dictionary array (or chunked array), or a pair "
    "(offsets int64, data uint8)"
)
#: The pyarrow types a records operator reads (besides a dictionary of one of them).
_ARROW_RECORDS = (
    "int32, uint32, int64, uint64, binary, string, large_binary, large_string, binary_view, "
    "string_view, or a dictionary of one of them"
)
#: How to keep or replace nulls: the end of every null error.
NULL_HINT = 'fill or drop nulls first, or pass nulls="null" (null results) or nulls=<a replacement value>'


def null_error(index: int) -> ValueError:
    """The error of a null under ``nulls="error"``: the index of the first null record."""
    return ValueError(f"null at index {index}: {NULL_HINT}")


def _first_null(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


@dataclass(frozen=True)
class FixedKeys:
    """``n`` fixed-width keys: ``keys`` is a C-contiguous uint32 (width 4) or uint64 (width 8) view."""

    keys: np.ndarray
    shape: tuple[int, ...]

    @property
    def width(self) -> int:
        return self.keys.dtype.itemsize

    @property
    def n(self) -> int:
        return int(self.keys.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes)

    def slice(self, start: int, stop: int) -> FixedKeys:
        k = self.keys[start:stop]
        return FixedKeys(k, (k.shape[0],))

    def record(self, i: int) -> bytes:
        return self.keys[i : i + 1].tobytes()


@dataclass(frozen=True)
class VarChunk:
    """Records ``data[offsets[i]:offsets[i+1]]``; ``offsets`` int32 or int64, ``data`` uint8."""

    offsets: np.ndarray
    data: np.ndarray

    @property
    def n(self) -> int:
        return int(self.offsets.shape[0]) - 1


@dataclass(frozen=True)
class VarRecords:
    """Variable-length byte records, possibly in several chunks (a chunked Arrow array)."""

    chunks: tuple[VarChunk, ...]

    @property
    def n(self) -> int:
        return sum(c.n for c in self.chunks)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,)

    @property
    def nbytes(self) -> int:
        return sum(int(c.offsets[-1]) - int(c.offsets[0]) for c in self.chunks if c.n > 0)

    def slice(self, start: int, stop: int) -> VarRecords:
        out: list[VarChunk] = []
        base = 0
        for c in self.chunks:
            lo, hi = max(start - base, 0), min(stop - base, c.n)
            if lo < hi:
                out.append(VarChunk(c.offsets[lo : hi + 1], c.data))
            base += c.n
        return VarRecords(tuple(out))

    def record(self, i: int) -> bytes:
        for c in self.chunks:
            if i < c.n:
                return c.data[int(c.offsets[i]) : int(c.offsets[i + 1])].tobytes()
            i -= c.n
        raise IndexError(i)

    def contiguous(self) -> tuple[np.ndarray, np.ndarray]:
        """One ``(offsets int64 starting at 0, data uint8)`` pair (copies only when it must)."""
        if len(self.chunks) == 1:
            c = self.chunks[0]
            o0 = int(c.offsets[0])
            if o0 == 0 and c.offsets.dtype == np.int64:
                return c.offsets, c.data[: int(c.offsets[-1])]
            offs = c.offsets.astype(np.int64) - o0
            return offs, c.data[o0 : int(c.offsets[-1])]
        parts: list[np.ndarray] = []
        pieces: list[np.ndarray] = [np.zeros(1, np.int64)]
        total = 0
        for c in self.chunks:
            o0 = int(c.offsets[0])
            parts.append(c.data[o0 : int(c.offsets[-1])])
            pieces.append(c.offsets[1:].astype(np.int64) - o0 + total)
            total += int(c.offsets[-1]) - o0
        data = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
        return np.concatenate(pieces), data


Records = FixedKeys | VarRecords


@dataclass(frozen=True)
class Numbers:
    """``bucketize``'s ``x``: C-contiguous 1-D float32/float64/int32/int64 values and result shape."""

    values: np.ndarray
    shape: tuple[int, ...]

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)

    def slice(self, start: int, stop: int) -> Numbers:
        v = self.values[start:stop]
        return Numbers(v, (v.shape[0],))

    def record(self, i: int) -> Any:
        return self.values[i].item()


@dataclass(frozen=True)
class Sequences:
    """int64 sequences: sequence i is ``values[value_offsets[i]:value_offsets[i+1]]``.

    ``value_offsets`` is int64 of length n+1 and may not start at 0 (Arrow slices).
    """

    value_offsets: np.ndarray
    values: np.ndarray

    @property
    def n(self) -> int:
        return int(self.value_offsets.shape[0]) - 1

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,)

    @property
    def nbytes(self) -> int:
        return 8 * (int(self.value_offsets[-1]) - int(self.value_offsets[0])) if self.n else 0

    def slice(self, start: int, stop: int) -> Sequences:
        return Sequences(self.value_offsets[start : stop + 1], self.values)

    def record(self, i: int) -> list[int]:
        return self.values[int(self.value_offsets[i]) : int(self.value_offsets[i + 1])].tolist()


# ---------------------------------------------------------------------------------------------
# Records: the hash operators' input
# ---------------------------------------------------------------------------------------------


def _check_offsets(
    offsets: np.ndarray, data_len: int, what: str = "offsets", data_name: str = "data"
) -> None:
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(f"{what} must be 1-D with length n+1 >= 1, got shape {offsets.shape}")
    if int(offsets[0]) != 0:
        raise ValueError(f"{what}[0] must be 0, got {int(offsets[0])}")
    if int(offsets[-1]) != data_len:
        raise ValueError(f"{what}[-1] must equal len({data_name}) = {data_len}, got {int(offsets[-1])}")
    if offsets.shape[0] > 1:
        bad = np.flatnonzero(offsets[1:] < offsets[:-1])
        if bad.size:
            i = int(bad[0]) + 1
            raise ValueError(
                f"{what} must be non-decreasing: {what}[{i}] = {int(offsets[i])} "
                f"< {what}[{i - 1}] = {int(offsets[i - 1])}"
            )


def _from_pair(pair: tuple[Any, Any]) -> VarRecords:
    offsets, data = (
        _native(_unmasked(a, "offset" if i == 0 else "byte")) if isinstance(a, np.ndarray) else a
        for i, a in enumerate(pair)
    )
    if not isinstance(offsets, np.ndarray) or offsets.dtype != np.int64:
        raise TypeError(f"(offsets, data): offsets must be a numpy int64 array, got {_describe(offsets)}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
        raise TypeError(f"(offsets, data): data must be a 1-D numpy uint8 array, got {_describe(data)}")
    _check_offsets(offsets, data.shape[0])
    return VarRecords((VarChunk(np.ascontiguousarray(offsets), np.ascontiguousarray(data)),))


def _describe(obj: object) -> str:
    if isinstance(obj, np.ndarray):
        return f"{obj.ndim}-D numpy array of dtype {obj.dtype}"
    return type(obj).__name__


def is_arrow(obj: object) -> bool:
    return type(obj).__module__.startswith("pyarrow")


def arrow_nulls(arr: Any) -> np.ndarray | None:
    """The null mask of a pyarrow Array (bool per element; None when it has no nulls), read from
    its validity bitmap at the array's offset."""
    n = len(arr)
    if not arr.null_count:
        return None
    validity = arr.buffers()[0]
    if validity is None:  # a null-typed array: every element is null
        return np.ones(n, bool)
    bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little", count=arr.offset + n)
    return bits[arr.offset :] == 0


def _arrow_data(arr: Any, dtype: Any) -> np.ndarray:
    """A primitive pyarrow array's values, in place: its data buffer from the array's offset."""
    n = len(arr)
    buf = arr.buffers()[1]
    if n == 0 or buf is None:
        return np.zeros(0, dtype)
    return np.frombuffer(buf, dtype=dtype, count=arr.offset + n)[arr.offset :]


def _concat_nulls(parts: list[tuple[int, np.ndarray | None]]) -> np.ndarray | None:
    """One null mask for consecutive chunks ``(length, mask or None)``; None when none has nulls."""
    if all(m is None for _, m in parts):
        return None
    return np.concatenate([np.zeros(k, bool) if m is None else m for k, m in parts])


def _var_offsets_type(t: Any) -> type[np.signedinteger[Any]] | None:
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_binary(t):
        return np.int32
    if pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        return np.int64
    return None


def _is_view(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string_view(t) or pa.types.is_binary_view(t))


def _arrow_chunk(arr: Any) -> VarChunk:
    """A binary/string array (large too) as offsets + data read in place (the offsets view starts
    at the slice's offset); a view array is first cast to its large form (one copy: a view's
    records are not one contiguous run of bytes)."""
    import pyarrow as pa

    if _is_view(arr.type):
        arr = arr.cast(pa.large_string() if pa.types.is_string_view(arr.type) else pa.large_binary())
    odt = _var_offsets_type(arr.type)
    assert odt is not None
    n = len(arr)
    bufs = arr.buffers()
    if n == 0:
        return VarChunk(np.zeros(1, np.int64), np.zeros(0, np.uint8))
    offsets = np.frombuffer(bufs[1], dtype=odt, count=arr.offset + n + 1)[arr.offset :]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return VarChunk(offsets, data)


def _arrow_key_dtype(t: Any) -> np.dtype | None:
    """The numpy dtype of an Arrow integer key type (int32/uint32/int64/uint64), else None."""
    import pyarrow as pa

    if pa.types.is_integer(t):
        dt = np.dtype(t.to_pandas_dtype())
        return dt if dt in _KEY_DTYPES else None
    return None


def _arrow_parts(values: Any) -> list[Any]:
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        return list(values.chunks)
    if isinstance(values, pa.Array):
        return [values]
    raise TypeError(f"unsupported batch type {type(values).__name__}: expected {_FORMS}")


def read_arrow_records(values: Any, what: str = _ARROW_RECORDS) -> tuple[Records, np.ndarray | None]:
    """A pyarrow Array or ChunkedArray of keys or byte records (not a dictionary) and its nulls.

    Integer keys are read from the data buffer in place (a chunked array's chunks are joined:
    one copy); byte records keep their chunks, read in place."""
    parts = _arrow_parts(values)
    t = values.type
    key_dtype = _arrow_key_dtype(t)
    if key_dtype is None and _var_offsets_type(t) is None and not _is_view(t):
        raise TypeError(f"unsupported pyarrow type {t}: expected {what}")
    nulls = _concat_nulls([(len(p), arrow_nulls(p)) for p in parts])
    if key_dtype is not None:
        datas = [_arrow_data(p, key_dtype) for p in parts]
        keys = datas[0] if len(datas) == 1 else np.concatenate(datas) if datas else np.zeros(0, key_dtype)
        return FixedKeys(keys.view(_KEY_DTYPES[key_dtype]), keys.shape), nulls
    chunks = tuple(_arrow_chunk(p) for p in parts if len(p))
    if not chunks:
        chunks = (VarChunk(np.zeros(1, np.int64), np.zeros(0, np.uint8)),)
    return VarRecords(chunks), nulls


def _strict(batch: Any, nulls: np.ndarray | None) -> Any:
    if nulls is not None:
        raise null_error(_first_null(nulls))
    return batch


def is_column(values: Any) -> bool:
    """A pyarrow Array or ChunkedArray (not a table, a record batch or a scalar)."""
    import pyarrow as pa

    return isinstance(values, (pa.Array, pa.ChunkedArray))


def _decoded(values: Any) -> Any:
    """A dictionary-encoded pyarrow column as its values (the strict readers' form of it)."""
    import pyarrow as pa

    if is_column(values) and pa.types.is_dictionary(values.type):
        return values.cast(values.type.value_type)
    return values


_BYTES_LIKE = (bytes, bytearray, memoryview)
_ELEMENT_TYPES = "expected bytes, bytearray, memoryview or str"


def _from_sequence(values: Sequence[Any]) -> tuple[VarRecords, np.ndarray | None]:
    """A Python sequence of ``str`` (hashed as UTF-8) or of bytes-like records, in one pass, and
    its nulls (``None`` elements: an empty record in the batch).

    One C-level pass takes the set of element types; when they are all ``str`` or all
    bytes/bytearray (or ``None``), Arrow's converter writes the UTF-8/bytes and int64 offsets
    straight into its buffers (no per-element ``bytes`` objects, no joined copy: the peak is about
    the data's size). Anything else re-reads the sequence element by element, which raises the
    exact error (type and index of the first bad element) or converts memoryviews by their bytes."""
    n = len(values)
    if n == 0:
        return VarRecords((VarChunk(np.zeros(1, np.int64), np.zeros(0, np.uint8)),)), None
    first = values[0]
    if not isinstance(first, (str, *_BYTES_LIKE)) and first is not None:
        raise TypeError(f"element 0 has unsupported type {type(first).__name__}: {_ELEMENT_TYPES}")
    kinds = set(map(type, values)) - {type(None)}
    if all(issubclass(k, str) for k in kinds):
        fast = _arrow_converted(values, "large_string")
    elif all(issubclass(k, (bytes, bytearray)) for k in kinds):
        fast = _arrow_converted(values, "large_binary")
    else:
        fast = None
    if fast is not None:
        return fast
    _raise_first_bad_element(values)
    nulls = _none_mask(values)
    return _bytes_slow(values, n), nulls


#: Elements converted per Arrow array: a builder grows by doubling and copies what it holds each
#: time, so slices of this size convert ~2x faster than one large array and each finished chunk
#: is sized exactly; the slices are still large enough for the CPU kernels' parallel path.
_CONVERT_SLICE = 1 << 20


def _arrow_converted(values: Sequence[Any], type_name: str) -> tuple[VarRecords, np.ndarray | None] | None:
    import pyarrow as pa

    typ = getattr(pa, type_name)()
    n = len(values)
    try:
        arrays = [pa.array(values[i : i + _CONVERT_SLICE], type=typ) for i in range(0, n, _CONVERT_SLICE)]
    except (UnicodeEncodeError, pa.ArrowException, TypeError, ValueError):
        return None  # e.g. a lone surrogate: the element-by-element pass names it
    parts = [c for arr in arrays for c in (arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr])]
    chunks = tuple(_arrow_chunk(c) for c in parts if len(c))
    return VarRecords(chunks), _concat_nulls([(len(c), arrow_nulls(c)) for c in parts])


def _bytes_slow(values: Sequence[Any], n: int) -> VarRecords:
    parts = [
        b""
        if v is None
        else v.encode("utf-8")
        if isinstance(v, str)
        else v
        if isinstance(v, bytes)
        else bytes(v)
        for v in values
    ]
    data = np.frombuffer(b"".join(parts), np.uint8)
    return _chunk_from_lengths(np.fromiter(map(len, parts), np.int64, n), data)


def _none_mask(values: Sequence[Any]) -> np.ndarray | None:
    """Which elements are ``None`` (by identity: ``==`` on array elements would not do)."""
    mask = np.fromiter((v is None for v in values), bool, len(values))
    return mask if mask.any() else None


def _chunk_from_lengths(lengths: np.ndarray, data: np.ndarray) -> VarRecords:
    offsets = np.zeros(lengths.shape[0] + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return VarRecords((VarChunk(offsets, data),))


def _raise_first_bad_element(values: Sequence[Any]) -> None:
    """Raise the exact error for the first element that breaks the sequence's rules."""
    at, first = next(((i, v) for i, v in enumerate(values) if v is not None), (0, None))
    for i, v in enumerate(values):
        if v is None:
            continue  # a null: the caller's null policy decides
        if not isinstance(v, (str, *_BYTES_LIKE)):
            raise TypeError(f"element {i} has unsupported type {type(v).__name__}: {_ELEMENT_TYPES}")
        if isinstance(v, str) != isinstance(first, str):
            raise TypeError(
                f"mixed element types: element {at} is {type(first).__name__} but "
                f"element {i} is {type(v).__name__}"
            )
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"element {i} is not encodable as UTF-8: {e.reason}") from None


def _unmasked(arr: np.ndarray, what: str = "value") -> np.ndarray:
    """A numpy masked array's data when nothing is masked; a masked element is refused like an
    Arrow null, naming its index (a flat index for 1-D arrays, the index tuple otherwise)."""
    if not isinstance(arr, np.ma.MaskedArray):
        return arr
    mask = np.ma.getmaskarray(arr)
    if mask.any():
        where = np.argwhere(mask)[0]
        index = int(where[0]) if arr.ndim == 1 else tuple(int(i) for i in where)
        raise ValueError(
            f"masked {what} at index {index}: masked values cannot be processed (fill or drop them first)"
        )
    return np.ma.getdata(arr)


def _native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the machine's byte order: a big-endian array is read as the values it holds
    (the contract hashes each value's little-endian bytes, not the caller's memory layout)."""
    if arr.dtype.byteorder not in ("=", "|") and not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _masked_nulls(
    arr: np.ndarray, masked_ok: bool, what: str = "value"
) -> tuple[np.ndarray, np.ndarray | None]:
    """A numpy array's data and its masked elements (flat, C order) as nulls; without
    ``masked_ok`` a masked element is refused (:func:`_unmasked`)."""
    if not masked_ok or not isinstance(arr, np.ma.MaskedArray):
        return _unmasked(arr, what), None
    mask = np.ma.getmaskarray(arr).reshape(-1)
    return np.ma.getdata(arr), (mask if mask.any() else None)


def read_records(values: Any, masked_ok: bool = False) -> tuple[Records, np.ndarray | None, np.dtype | None]:
    """A hash operator's batch (docs/operators.md, "Values"; not a dictionary), its nulls, and
    the numpy dtype of its keys (None for byte records); TypeError/ValueError for anything else."""
    if isinstance(values, (FixedKeys, VarRecords)):
        return values, None, None
    if isinstance(values, np.ndarray):
        given = values.dtype
        data, nulls = _masked_nulls(values, masked_ok)
        data = _native(data)
        if data.dtype in _KEY_DTYPES:
            arr = np.ascontiguousarray(data)
            return FixedKeys(arr.reshape(-1).view(_KEY_DTYPES[data.dtype]), data.shape), nulls, data.dtype
        if data.dtype == object:
            items = data.reshape(-1).tolist()
            if nulls is not None:
                items = [None if m else v for v, m in zip(items, nulls.tolist(), strict=True)]
            return (*_from_sequence(items), None)
        raise TypeError(
            f"unsupported array dtype {given}: expected int32, uint32, int64 or "
            "uint64 keys (8/16-bit ints, floats and bools are not hashed; cast "
            "explicitly)"
        )
    if isinstance(values, tuple) and len(values) == 2 and all(isinstance(v, np.ndarray) for v in values):
        return _from_pair(values), None, None
    if is_arrow(values):
        batch, nulls = read_arrow_records(values)
        return (
            batch,
            nulls,
            (None if isinstance(batch, VarRecords) else np.dtype(values.type.to_pandas_dtype())),
        )
    if isinstance(values, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            f"a single {type(values).__name__} is not a batch: pass a sequence of records, e.g. [value]"
        )
    if isinstance(values, (list, tuple)) or (
        isinstance(values, Sequence) and not isinstance(values, (str, bytes))
    ):
        return (*_from_sequence(values), None)
    raise TypeError(f"unsupported batch type {type(values).__name__}: expected {_FORMS}")


def as_records(values: Any) -> Records:
    """Normalise a hash operator's batch (docs/operators.md, "Values") or raise
    TypeError/ValueError (a null too: a dictionary column is read as its values)."""
    if is_arrow(values):
        values = _decoded(values)
    batch, nulls, _ = read_records(values)
    return _strict(batch, nulls)


# ---------------------------------------------------------------------------------------------
# bucketize's x, the encoder's sequences, the decoder's (offsets, data)
# ---------------------------------------------------------------------------------------------


def _arrow_number_dtype(t: Any) -> np.dtype:
    try:
        return np.dtype(t.to_pandas_dtype())
    except (NotImplementedError, TypeError):
        return np.dtype(object)


def read_numbers(x: Any, op: str = "bucketize", masked_ok: bool = False) -> tuple[Numbers, np.ndarray | None]:
    """The values of a numbers operator (``op`` names it in errors: bucketize's ``x``,
    sigrid_hash's ids) and their nulls; a pyarrow column is read from its data buffers in place
    (a chunked array's chunks are joined: one copy)."""
    if isinstance(x, Numbers):
        return x, None
    nulls: np.ndarray | None = None
    if is_column(x):
        parts = _arrow_parts(x)
        dt = _arrow_number_dtype(x.type)
        if dt not in _NUMBER_DTYPES:
            raise TypeError(f"{op}: unsupported x dtype {dt}: expected float32, float64, int32 or int64")
        nulls = _concat_nulls([(len(p), arrow_nulls(p)) for p in parts])
        datas = [_arrow_data(p, dt) for p in parts]
        values = datas[0] if len(datas) == 1 else np.concatenate(datas) if datas else np.zeros(0, dt)
        return Numbers(values, values.shape), nulls
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{op}: x must be a numpy float32, float64, int32 or int64 array, got {type(x).__name__}"
        )
    data, nulls = _masked_nulls(x, masked_ok)
    data = _native(data)
    if data.dtype not in _NUMBER_DTYPES:
        raise TypeError(f"{op}: unsupported x dtype {data.dtype}: expected float32, float64, int32 or int64")
    arr = np.ascontiguousarray(data)
    return Numbers(arr.reshape(-1), data.shape), nulls


def as_numbers(x: Any, op: str = "bucketize") -> Numbers:
    """The values of a numbers operator, strictly (no nulls; a dictionary is read as its values)."""
    if is_arrow(x):
        x = _decoded(x)
    batch, nulls = read_numbers(x, op)
    return _strict(batch, nulls)


def _arrow_sequences(sequences: Any) -> tuple[Sequences, np.ndarray | None]:
    """A pyarrow list<int64>/large_list<int64> column: value offsets and values read from the
    buffers at the slice's offset (a chunked array is combined first: one copy)."""
    import pyarrow as pa

    if isinstance(sequences, pa.ChunkedArray):
        sequences = sequences.combine_chunks()
    t = sequences.type
    if not (
        isinstance(sequences, pa.Array)
        and (pa.types.is_list(t) or pa.types.is_large_list(t))
        and t.value_type == pa.int64()
    ):
        raise TypeError(
            f"delta_varint_encode: unsupported pyarrow type {t}: expected list<int64> or large_list<int64>"
        )
    nulls = arrow_nulls(sequences)
    inner = sequences.values  # the whole child, whatever the slice: the offsets index into it
    odt = np.int32 if pa.types.is_list(t) else np.int64
    n = len(sequences)
    offsets = np.frombuffer(sequences.buffers()[1], dtype=odt, count=sequences.offset + n + 1)[
        sequences.offset :
    ].astype(np.int64)
    inner_nulls = arrow_nulls(inner)
    if inner_nulls is not None and inner_nulls[int(offsets[0]) : int(offsets[-1])].any():
        raise ValueError("delta_varint_encode: null inside a sequence")
    vals = _arrow_data(inner, np.int64)
    return Sequences(offsets, vals), nulls


def read_sequences(sequences: Any) -> tuple[Sequences, np.ndarray | None]:
    """The encoder's sequences and their nulls (a ``None`` in a list: an empty sequence)."""
    if isinstance(sequences, Sequences):
        return sequences, None
    if (
        isinstance(sequences, tuple)
        and len(sequences) == 2
        and all(isinstance(v, np.ndarray) for v in sequences)
    ):
        vo, vals = (_native(_unmasked(a)) for a in sequences)
        if vo.dtype != np.int64:
            raise TypeError(f"(value_offsets, values): value_offsets must be int64, got {vo.dtype}")
        if vals.dtype != np.int64 or vals.ndim != 1:
            raise TypeError(
                f"(value_offsets, values): values must be a 1-D int64 array, got {_describe(vals)}"
            )
        _check_offsets(vo, vals.shape[0], "value_offsets", "values")
        return Sequences(np.ascontiguousarray(vo), np.ascontiguousarray(vals)), None
    if is_column(sequences):
        return _arrow_sequences(sequences)
    if isinstance(sequences, np.ndarray) or not isinstance(sequences, (list, tuple)):
        raise TypeError(
            f"delta_varint_encode: sequences must be a list of 1-D int64 arrays, a "
            f"pyarrow list<int64> array or (value_offsets, values), got "
            f"{_describe(sequences)}"
        )
    nulls = _none_mask(sequences)
    arrays = [_sequence(i, s) for i, s in enumerate(sequences)]
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    vo = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum(lengths, out=vo[1:])
    vals = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return Sequences(vo, vals), nulls


_NO_VALUES = np.zeros(0, np.int64)


def _sequence(i: int, s: Any) -> np.ndarray:
    """Sequence ``i`` of a list as int64 values (``None``, a null, as no values)."""
    if s is None:
        return _NO_VALUES
    if isinstance(s, np.ndarray):
        s = _unmasked(s, f"value in sequence {i}")
        if s.ndim != 1 or s.dtype.kind != "i":
            raise TypeError(f"sequence {i} must be a 1-D signed integer array, got {_describe(s)}")
        return s.astype(np.int64, copy=False)
    if isinstance(s, (list, tuple)):
        if not all(type(v) is int for v in s):
            bad = next(j for j, v in enumerate(s) if type(v) is not int)
            raise TypeError(f"sequence {i} element {bad} has type {type(s[bad]).__name__}: expected int")
        try:
            return np.array(s, dtype=np.int64)
        except OverflowError:
            bad = next(j for j, v in enumerate(s) if not -(1 << 63) <= v < (1 << 63))
            raise ValueError(f"sequence {i} element {bad} = {s[bad]} is outside int64") from None
    raise TypeError(
        f"sequence {i} has unsupported type {type(s).__name__}: expected a 1-D int64 array or a list of int"
    )


def as_sequences(sequences: Any) -> Sequences:
    """The encoder's sequences, strictly (no nulls)."""
    batch, nulls = read_sequences(sequences)
    return _strict(batch, nulls)


def as_encoded(offsets: Any, data: Any) -> VarRecords:
    """``delta_varint_decode``'s input: ``(offsets int64[n+1], data uint8[])``."""
    if isinstance(offsets, np.ndarray) and isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(bytes(data), np.uint8)
    return _from_pair((offsets, data))


_ARROW_ENCODED = "binary, large_binary or binary_view (the encoder's arrow output)"


def read_encoded(values: Any) -> tuple[VarRecords, np.ndarray | None]:
    """The decoder's input: an ``(offsets, data)`` pair, or a pyarrow binary column, and its nulls."""
    if is_column(values):
        import pyarrow as pa

        t = values.type
        if not (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)):
            raise TypeError(f"delta_varint_decode: unsupported pyarrow type {t}: expected {_ARROW_ENCODED}")
        batch, nulls = read_arrow_records(values, _ARROW_ENCODED)
        assert isinstance(batch, VarRecords)
        return batch, nulls
    if not (isinstance(values, tuple) and len(values) == 2):
        raise TypeError(
            "delta_varint_decode: expected an (offsets, data) pair or a pyarrow binary column, "
            f"got {type(values).__name__}"
        )
    return as_encoded(*values), None
