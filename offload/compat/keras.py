"""Keras's ``Hashing`` layer without a salt: ``keras.layers.Hashing(num_bins, mask_value)(x)``.

What the layer computes (Keras 3, ``Hashing._hash_values_to_bins``), and so what
:func:`hashing` computes:

- integers are hashed as their decimal text (``tf.as_string``: ``42`` -> ``b"42"``, ``-7`` ->
  ``b"-7"``), so an int32 and an int64 holding the same number share a bin; strings as their
  bytes (a ``str`` as UTF-8);
- the hash is FarmHash ``Fingerprint64`` reduced by the unsigned modulo
  (``tf.strings.to_hash_bucket_fast``), returned as int64;
- with ``mask_value`` and ``num_bins > 1``, bin 0 is the mask's: a value equal to ``mask_value``
  gets 0 and every other value ``Fingerprint64 % (num_bins - 1) + 1``. With ``num_bins == 1``
  Keras applies no mask: every value, the mask included, gets bin 0.

Integers go to the runtime as they are (``offload.decimal_hash_bucket``: the decimal text and its
FarmHash computed together, on the engine by a binary-to-decimal stage in front of FarmHash, on
the CPU by a compiled kernel, never by Python ``str``); strings to ``hash_bucket`` with
``hash="farmhash64"``. ``backend=`` routes either.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from offload.batch import VarRecords, as_records
from offload.compat import (
    arrow_nulls,
    arrow_type,
    check_count,
    describe,
    first_index,
    is_arrow,
    read_text,
    runtime_of,
    text_kind,
)
from offload.host.cpu.kernels_text import equal_records
from offload.runtime import BackendChoice, Runtime, VerifyMode

__all__ = ["hashing"]

_WHO = "hashing"
_INTS = (np.dtype(np.int32), np.dtype(np.int64))


def hashing(
    values: Any,
    num_bins: int,
    mask_value: int | str | bytes | None = None,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """``keras.layers.Hashing(num_bins=num_bins, mask_value=mask_value)(values)``: int64 bins,
    shaped like a numpy input.

    ``values``: strings (numpy ``str``/``bytes``/object arrays, sequences of ``str`` or
    ``bytes``, pyarrow string/binary arrays), or int32/int64 integers (numpy or pyarrow arrays, a
    sequence of Python ints read as int64); no nulls. ``mask_value``: a ``str``/``bytes`` for
    strings, an ``int`` for integers.
    """
    bins = check_count(_WHO, "num_bins", num_bins)
    masked = mask_value is not None and bins > 1  # Keras reserves bin 0 only when it can
    ints = _integers(values)
    rt = runtime_of(runtime, _WHO)
    n_bins = bins - 1 if masked else bins
    if ints is not None:
        mask = _int_mask(ints, mask_value) if masked else None
        out = rt.decimal_hash_bucket(ints.reshape(-1), n_bins, backend=backend, verify=verify)
        return _masked(out, mask).reshape(ints.shape)
    if not text_kind(values):
        raise TypeError(
            f"{_WHO}: unsupported {describe(values)}: expected strings, int32 or int64 "
            "(Keras truncates floats to int64 before hashing: cast explicitly)"
        )
    text = read_text(values, _WHO, nulls_allowed=False)
    records = as_records(text.records)
    mask = _text_mask(records, mask_value) if masked else None
    out = rt.hash_bucket(records, n_bins, hash="farmhash64", backend=backend, verify=verify)
    return _masked(out, mask).reshape(text.shape)


def _masked(out: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Keras's mask: bin 0 for the mask value, the others shifted up by one."""
    if mask is not None:
        out += 1
        out[mask] = 0
    return out


def _integers(values: Any) -> np.ndarray | None:
    """``values`` as an int32/int64 numpy array when they are integers, else None (strings, or
    a dtype refused later)."""
    if isinstance(values, np.ndarray):
        native = values.dtype.newbyteorder("=")  # a big-endian array holds the same numbers
        if native not in _INTS:
            return None
        if isinstance(values, np.ma.MaskedArray) and np.ma.getmaskarray(values).any():
            where = first_index(np.ma.getmaskarray(values))
            raise ValueError(f"{_WHO}: null at index {where}: fill or drop nulls first")
        return np.ma.getdata(values).astype(native, copy=False)
    if is_arrow(values):
        import pyarrow as pa

        t = arrow_type(values)
        if t not in (pa.int32(), pa.int64()):
            return None
        nulls = arrow_nulls(values)
        if nulls is not None:
            raise ValueError(f"{_WHO}: null at index {first_index(nulls)}: fill or drop nulls first")
        if pa.types.is_dictionary(values.type):
            values = values.cast(t)
        return np.asarray(values.to_numpy(zero_copy_only=False))
    if isinstance(values, (list, tuple)) and values and all(type(v) is int for v in values):
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            bad = next(i for i, v in enumerate(values) if not -(1 << 63) <= v < 1 << 63)
            raise ValueError(f"{_WHO}: element {bad} = {values[bad]} is outside int64") from None
    return None


def _int_mask(ints: np.ndarray, mask_value: Any) -> np.ndarray:
    if isinstance(mask_value, (bool, np.bool_)) or not isinstance(mask_value, (int, np.integer)):
        raise TypeError(
            f"{_WHO}: mask_value must be an int for {ints.dtype} values, got {type(mask_value).__name__}"
        )
    info = np.iinfo(ints.dtype)
    if not info.min <= int(mask_value) <= info.max:
        raise ValueError(f"{_WHO}: mask_value {int(mask_value)} is outside the values' dtype {ints.dtype}")
    return (ints == mask_value).reshape(-1)


def _text_mask(records: Any, mask_value: Any) -> np.ndarray:
    if isinstance(mask_value, str):
        needle = mask_value.encode("utf-8")
    elif isinstance(mask_value, bytes):
        needle = mask_value
    else:
        raise TypeError(
            f"{_WHO}: mask_value must be a str or bytes for string values, got {type(mask_value).__name__}"
        )
    assert isinstance(records, VarRecords)
    want = np.frombuffer(needle, np.uint8)
    parts = []
    for chunk in records.chunks:
        eq = np.empty(chunk.n, bool)
        equal_records(chunk.offsets, chunk.data, want, eq)
        parts.append(eq)
    return np.concatenate(parts) if parts else np.zeros(0, bool)
