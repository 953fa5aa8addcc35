"""Drop-in replacements for the hashing functions of training frameworks, bucket for bucket.

A model's embedding rows are indexed by the buckets its training pipeline computed; a serving or
ETL path that hashes differently reads the wrong rows. Each function here equals its framework's
function element for element (checked against vectors produced by the real libraries, see
docs/compatibility.md) and runs on offload's runtime (``backend=``, ``verify=``, ``runtime=``):

- :mod:`offload.compat.tf`: ``to_hash_bucket_fast`` = ``tf.strings.to_hash_bucket_fast``;
- :mod:`offload.compat.keras`: ``hashing`` = ``keras.layers.Hashing(num_bins, mask_value)(x)``;
- :mod:`offload.compat.spark`: ``hash`` and ``xxhash64`` = ``pyspark.sql.functions.hash`` and
  ``xxhash64`` over IntegerType, LongType and StringType columns, nulls included;
- :mod:`offload.compat.torcharrow`: ``sigrid_hash`` = TorchArrow's ``functional.sigrid_hash``.

Numpy or pyarrow in, numpy out. ``from offload.compat import tf`` (or ``offload.compat.tf`` after
``import offload.compat``: the submodules load on first use).

This module also holds what the submodules share: the runtime a call uses, the verify mode, and
the reading of string columns (numpy ``str``/``bytes``/object arrays, sequences, pyarrow
string/binary arrays) into the record forms the runtime takes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from offload.runtime import VERIFY_MODES, Runtime, VerifyMode, default_runtime

__all__ = ["tf", "keras", "spark", "torcharrow"]

_SUBMODULES = ("tf", "keras", "spark", "torcharrow")


def __getattr__(name: str) -> ModuleType:
    """``offload.compat.tf`` and the others, imported on first access."""
    if name in _SUBMODULES:
        return importlib.import_module(f"offload.compat.{name}")
    raise AttributeError(f"module 'offload.compat' has no attribute {name!r}")


def runtime_of(runtime: Runtime | None, who: str) -> Runtime:
    """The runtime a drop-in runs on: the one given, else the process's default runtime."""
    if runtime is None:
        return default_runtime()
    if not isinstance(runtime, Runtime):
        raise TypeError(f"{who}: runtime must be an offload.Runtime or None, got {type(runtime).__name__}")
    return runtime


def verify_mode(rt: Runtime, verify: VerifyMode | None) -> str:
    """``verify`` as the runtime reads it: None is the runtime's own mode."""
    mode = rt.verify if verify is None else verify
    if mode not in VERIFY_MODES:
        raise ValueError(f"unknown verify mode {mode!r}: expected 'off', 'sample' or 'full'")
    return mode


def check_count(who: str, name: str, value: Any) -> int:
    """A bucket or bin count of TensorFlow and Keras: an int64 attribute, at least 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{who}: {name} must be an int, got {type(value).__name__}")
    v = int(value)
    if not 1 <= v < 1 << 63:
        raise ValueError(f"{who}: {name} must be in [1, 2**63), got {v}")
    return v


# ---------------------------------------------------------------------------------------------
# Reading columns
# ---------------------------------------------------------------------------------------------


def is_arrow(values: object) -> bool:
    return type(values).__module__.startswith("pyarrow")


def arrow_type(values: Any) -> Any:
    """A pyarrow Array's or ChunkedArray's type, dictionary-encoded types read as their values."""
    import pyarrow as pa

    t = values.type
    return t.value_type if pa.types.is_dictionary(t) else t


def arrow_is_text(values: Any) -> bool:
    import pyarrow as pa

    t = arrow_type(values)
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def arrow_nulls(values: Any) -> np.ndarray | None:
    """The null mask of a pyarrow Array or ChunkedArray (None when it has no nulls)."""
    if not values.null_count:
        return None
    return np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def describe(values: Any) -> str:
    """What a column is, for error messages: ``numpy float64 array``, ``pyarrow double array``."""
    if isinstance(values, np.ndarray):
        return f"numpy {values.dtype} array"
    if is_arrow(values):
        return f"pyarrow {values.type} array"
    if isinstance(values, (list, tuple)):
        bad = next((v for v in values if not isinstance(v, (str, bytes, bytearray, memoryview))), None)
        inner = f" of {type(bad).__name__}" if bad is not None else ""
        return f"{type(values).__name__}{inner}"
    return type(values).__name__


def first_index(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(-1))[0])


@dataclass(frozen=True)
class Text:
    """A string column read for hashing: ``records`` is a batch the runtime takes (a pyarrow
    array or chunked array, or an ``(offsets, data)`` pair), one record per element in row-major
    order; ``shape`` is the caller's; ``nulls`` marks the nulls (their record is empty: a
    placeholder the caller overrides), None when there are none."""

    records: Any
    shape: tuple[int, ...]
    nulls: np.ndarray | None


def text_kind(values: Any) -> bool:
    """Whether ``values`` is a string column of a form :func:`read_text` reads."""
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "USO"
    if is_arrow(values):
        return arrow_is_text(values)
    if isinstance(values, (list, tuple)):
        return all(v is None or isinstance(v, (str, bytes, bytearray, memoryview)) for v in values)
    return isinstance(values, (str, bytes))


def read_text(values: Any, who: str, nulls_allowed: bool) -> Text:
    """A string column as :class:`Text`. ``nulls_allowed``: None elements (object arrays and
    sequences), masked numpy elements and pyarrow nulls are nulls; otherwise they are refused,
    naming the (row-major) index."""
    import pyarrow as pa

    if isinstance(values, (str, bytes)):  # a scalar string tensor
        return Text([values], (), None)
    if is_arrow(values):
        if pa.types.is_dictionary(values.type):
            values = values.cast(arrow_type(values))
        nulls = arrow_nulls(values)
        if nulls is not None:
            _refuse_null(nulls, who, nulls_allowed)
            values = values.fill_null(
                b"" if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type) else ""
            )
        return Text(values, (len(values),), nulls)
    if isinstance(values, np.ndarray):
        shape = values.shape
        flat = values.reshape(-1)
        if isinstance(flat, np.ma.MaskedArray):  # a masked element is a null
            masked = np.ma.getmaskarray(flat)
            flat = np.ma.getdata(flat)
            if masked.any():
                items = [None if m else v for v, m in zip(flat.tolist(), masked.tolist())]
                return _with_nulls(items, shape, who, nulls_allowed)
        if values.dtype.kind in "US":  # numpy's own strings: Arrow reads them without Python objects
            return Text(pa.array(flat), shape, None)
        items = flat.tolist()
    else:
        shape = (len(values),)
        items = list(values)
    return _with_nulls(items, shape, who, nulls_allowed)


def _with_nulls(items: list[Any], shape: tuple[int, ...], who: str, nulls_allowed: bool) -> Text:
    """Python string items, ``None`` being a null (replaced by an empty placeholder)."""
    nulls = np.fromiter((v is None for v in items), dtype=bool, count=len(items))
    if not nulls.any():
        return Text(items, shape, None)
    _refuse_null(nulls, who, nulls_allowed)
    first = next((v for v in items if v is not None), "")
    empty: str | bytes = "" if isinstance(first, str) else b""
    return Text([empty if v is None else v for v in items], shape, nulls)


def _refuse_null(nulls: np.ndarray, who: str, nulls_allowed: bool) -> None:
    if not nulls_allowed:
        raise ValueError(f"{who}: null at index {first_index(nulls)}: fill or drop nulls first")
