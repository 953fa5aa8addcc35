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
    "a pyarrow binary/string array (or chunked array), or a pair (offsets int64, data uint8)"
)


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


def _is_arrow(obj: object) -> bool:
    return type(obj).__module__.startswith("pyarrow")


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


def _arrow_chunk(arr: Any, index_base: int) -> VarChunk:
    import pyarrow as pa

    t = arr.type
    odt: type[np.signedinteger[Any]]
    if pa.types.is_string(t) or pa.types.is_binary(t):
        odt = np.int32
    elif pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        odt = np.int64
    else:
        raise TypeError(
            f"unsupported pyarrow type {t}: expected binary, large_binary, string or large_string"
        )
    if arr.null_count:
        first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"null at index {index_base + first}: nulls cannot be hashed")
    n = len(arr)
    bufs = arr.buffers()
    if n == 0:
        return VarChunk(np.zeros(1, np.int64), np.zeros(0, np.uint8))
    # Arrow buffers are read in place: the offsets view starts at the slice's offset.
    offsets = np.frombuffer(bufs[1], dtype=odt, count=arr.offset + n + 1)[arr.offset :]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return VarChunk(offsets, data)


def _from_arrow(values: Any) -> VarRecords:
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        chunks, base = [], 0
        for ch in values.chunks:
            if len(ch):
                chunks.append(_arrow_chunk(ch, base))
            base += len(ch)
        if not chunks:
            _arrow_chunk(values.chunks[0] if values.num_chunks else pa.array([], values.type), 0)
        return VarRecords(tuple(chunks))
    if isinstance(values, pa.Array):
        return VarRecords((_arrow_chunk(values, 0),))
    raise TypeError(f"unsupported batch type {type(values).__name__}: expected {_FORMS}")


_BYTES_LIKE = (bytes, bytearray, memoryview)
_ELEMENT_TYPES = "expected bytes, bytearray, memoryview or str"


def _from_sequence(values: Sequence[Any]) -> VarRecords:
    """A Python sequence of ``str`` (hashed as UTF-8) or of bytes-like records, in one pass.

    One C-level pass takes the set of element types; when they are all ``str`` or all
    bytes/bytearray, Arrow's converter writes the UTF-8/bytes and int64 offsets straight into its
    buffers (no per-element ``bytes`` objects, no joined copy: the peak is about the data's size).
    Anything else re-reads the sequence element by element, which raises the exact error (type and
    index of the first bad element) or converts memoryviews by their bytes."""
    n = len(values)
    if n == 0:
        return VarRecords((VarChunk(np.zeros(1, np.int64), np.zeros(0, np.uint8)),))
    first = values[0]
    if not isinstance(first, (str, *_BYTES_LIKE)):
        raise TypeError(f"element 0 has unsupported type {type(first).__name__}: {_ELEMENT_TYPES}")
    kinds = set(map(type, values))
    if all(issubclass(k, str) for k in kinds):
        fast = _arrow_converted(values, "large_string")
    elif all(issubclass(k, (bytes, bytearray)) for k in kinds):
        fast = _arrow_converted(values, "large_binary")
    else:
        fast = None
    if fast is not None:
        return fast
    _raise_first_bad_element(values)
    return _bytes_slow(values, n)


#: Elements converted per Arrow array: a builder grows by doubling and copies what it holds each
#: time, so slices of this size convert ~2x faster than one large array and each finished chunk
#: is sized exactly; the slices are still large enough for the CPU kernels' parallel path.
_CONVERT_SLICE = 1 << 20


def _arrow_converted(values: Sequence[Any], type_name: str) -> VarRecords | None:
    import pyarrow as pa

    typ = getattr(pa, type_name)()
    n = len(values)
    try:
        arrays = [pa.array(values[i : i + _CONVERT_SLICE], type=typ) for i in range(0, n, _CONVERT_SLICE)]
    except (UnicodeEncodeError, pa.ArrowException, TypeError, ValueError):
        return None  # e.g. a lone surrogate: the element-by-element pass names it
    chunks: list[VarChunk] = []
    for arr in arrays:
        parts = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
        chunks.extend(_arrow_chunk(c, 0) for c in parts if len(c))
    return VarRecords(tuple(chunks))


def _bytes_slow(values: Sequence[Any], n: int) -> VarRecords:
    parts = [
        v.encode("utf-8") if isinstance(v, str) else v if isinstance(v, bytes) else bytes(v) for v in values
    ]
    data = np.frombuffer(b"".join(parts), np.uint8)
    return _chunk_from_lengths(np.fromiter(map(len, parts), np.int64, n), data)


def _chunk_from_lengths(lengths: np.ndarray, data: np.ndarray) -> VarRecords:
    offsets = np.zeros(lengths.shape[0] + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return VarRecords((VarChunk(offsets, data),))


def _raise_first_bad_element(values: Sequence[Any]) -> None:
    """Raise the exact error for the first element that breaks the sequence's rules."""
    first = values[0]
    for i, v in enumerate(values):
        if not isinstance(v, (str, *_BYTES_LIKE)):
            raise TypeError(f"element {i} has unsupported type {type(v).__name__}: {_ELEMENT_TYPES}")
        if isinstance(v, str) != isinstance(first, str):
            raise TypeError(
                f"mixed element types: element 0 is {type(first).__name__} but "
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


def as_records(values: Any) -> Records:
    """Normalise a hash operator's batch (docs/operators.md, "Values") or raise
    TypeError/ValueError."""
    if isinstance(values, (FixedKeys, VarRecords)):
        return values
    if isinstance(values, np.ndarray):
        given, values = values.dtype, _native(_unmasked(values))
        if values.dtype in _KEY_DTYPES:
            arr = np.ascontiguousarray(values)
            return FixedKeys(arr.reshape(-1).view(_KEY_DTYPES[values.dtype]), values.shape)
        if values.dtype == object:
            return _from_sequence(values.reshape(-1).tolist())
        raise TypeError(
            f"unsupported array dtype {given}: expected int32, uint32, int64 or "
            "uint64 keys (8/16-bit ints, floats and bools are not hashed; cast "
            "explicitly)"
        )
    if isinstance(values, tuple) and len(values) == 2 and all(isinstance(v, np.ndarray) for v in values):
        return _from_pair(values)
    if _is_arrow(values):
        return _from_arrow(values)
    if isinstance(values, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            f"a single {type(values).__name__} is not a batch: pass a sequence of records, e.g. [value]"
        )
    if isinstance(values, (list, tuple)) or (
        isinstance(values, Sequence) and not isinstance(values, (str, bytes))
    ):
        return _from_sequence(values)
    raise TypeError(f"unsupported batch type {type(values).__name__}: expected {_FORMS}")


# ---------------------------------------------------------------------------------------------
# bucketize's x, the encoder's sequences, the decoder's (offsets, data)
# ---------------------------------------------------------------------------------------------


def as_numbers(x: Any, op: str = "bucketize") -> Numbers:
    """The values of a numbers operator (``op`` names it in errors: bucketize's ``x``,
    sigrid_hash's ids)."""
    if isinstance(x, Numbers):
        return x
    if _is_arrow(x):
        import pyarrow as pa

        if isinstance(x, pa.ChunkedArray):
            x = x.combine_chunks()
        if isinstance(x, pa.Array):
            if x.null_count:
                first = int(np.flatnonzero(x.is_null().to_numpy(zero_copy_only=False))[0])
                raise ValueError(f"null at index {first}: {op} needs a value")
            x = x.to_numpy(zero_copy_only=False)
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{op}: x must be a numpy float32, float64, int32 or int64 array, got {type(x).__name__}"
        )
    x = _native(_unmasked(x))
    if x.dtype not in _NUMBER_DTYPES:
        raise TypeError(f"{op}: unsupported x dtype {x.dtype}: expected float32, float64, int32 or int64")
    arr = np.ascontiguousarray(x)
    return Numbers(arr.reshape(-1), x.shape)


def as_sequences(sequences: Any) -> Sequences:
    if isinstance(sequences, Sequences):
        return sequences
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
        return Sequences(np.ascontiguousarray(vo), np.ascontiguousarray(vals))
    if _is_arrow(sequences):
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
                f"delta_varint_encode: unsupported pyarrow type {t}: expected "
                "list<int64> or large_list<int64>"
            )
        if sequences.null_count:
            first = int(np.flatnonzero(sequences.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"null at index {first}: a sequence cannot be null")
        inner = sequences.values  # respects nothing of the slice: offsets index into it
        if inner.null_count:
            raise ValueError("delta_varint_encode: null inside a sequence")
        odt = np.int32 if pa.types.is_list(t) else np.int64
        n = len(sequences)
        offsets = np.frombuffer(sequences.buffers()[1], dtype=odt, count=sequences.offset + n + 1)[
            sequences.offset :
        ].astype(np.int64)
        vals = np.frombuffer(inner.buffers()[1], dtype=np.int64, count=inner.offset + len(inner))[
            inner.offset :
        ]
        return Sequences(offsets, vals)
    if isinstance(sequences, np.ndarray) or not isinstance(sequences, (list, tuple)):
        raise TypeError(
            f"delta_varint_encode: sequences must be a list of 1-D int64 arrays, a "
            f"pyarrow list<int64> array or (value_offsets, values), got "
            f"{_describe(sequences)}"
        )
    arrays: list[np.ndarray] = []
    for i, s in enumerate(sequences):
        if isinstance(s, np.ndarray):
            s = _unmasked(s, f"value in sequence {i}")
            if s.ndim != 1 or s.dtype.kind != "i":
                raise TypeError(f"sequence {i} must be a 1-D signed integer array, got {_describe(s)}")
            arrays.append(s.astype(np.int64, copy=False))
        elif isinstance(s, (list, tuple)):
            if not all(type(v) is int for v in s):
                bad = next(j for j, v in enumerate(s) if type(v) is not int)
                raise TypeError(f"sequence {i} element {bad} has type {type(s[bad]).__name__}: expected int")
            try:
                arrays.append(np.array(s, dtype=np.int64))
            except OverflowError:
                bad = next(j for j, v in enumerate(s) if not -(1 << 63) <= v < (1 << 63))
                raise ValueError(f"sequence {i} element {bad} = {s[bad]} is outside int64") from None
        else:
            raise TypeError(
                f"sequence {i} has unsupported type {type(s).__name__}: expected a 1-D "
                "int64 array or a list of int"
            )
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    vo = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum(lengths, out=vo[1:])
    vals = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return Sequences(vo, vals)


def as_encoded(offsets: Any, data: Any) -> VarRecords:
    """``delta_varint_decode``'s input: ``(offsets int64[n+1], data uint8[])``."""
    if isinstance(offsets, np.ndarray) and isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(bytes(data), np.uint8)
    return _from_pair((offsets, data))
