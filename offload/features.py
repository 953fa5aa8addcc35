"""Feature pipelines: a declarative spec of operator calls over the columns of Arrow tables.

    spec = offload.FeatureSpec([
        offload.Feature("user_id", "hash_bucket", num_buckets=1_000_003, dtype="int64"),
        offload.Feature("country", "compat.tf.to_hash_bucket_fast", num_buckets=97),
        offload.Feature("price", "bucketize", boundaries=[1.0, 10.0, 100.0], dtype="float32"),
    ])
    table = spec.transform(pa_table, keep=["label"])     # a pa.Table: one column per feature
    spec.transform_parquet("events/", "features.parquet")  # streamed, larger than memory
    spec.fingerprint                                     # the same hex digest at training and serving

The contract (docs/features.md):

- A :class:`Feature` is one operator applied to one column: ``op`` is a registry operator's name
  (``offload.ops.REGISTRY``) or a framework drop-in of :mod:`offload.compat` named
  ``"compat.<module>.<function>"`` (:data:`COMPAT_OPS`). Its parameters are validated when it is
  built, with the operator's own messages; ``dtype`` names the column type it was written for and
  ``cast=True`` allows a column of another type to be cast to it; ``nulls`` is ``"error"``,
  ``"null"`` (the output is null there) or a replacement value.
- :meth:`FeatureSpec.transform` takes a ``pa.Table``, a ``pa.RecordBatch``, an iterable of record
  batches or a Parquet file/dataset path and returns a ``pa.Table`` with one column per feature
  (named ``out``, in spec order, typed as :meth:`FeatureSpec.output_schema` says), then the
  ``keep`` input columns. :meth:`FeatureSpec.transform_batches` is the streaming form (one output
  record batch per input batch, same row order and count): what the Ray Data and Spark adapters
  call. The schema is validated before any operator runs (:meth:`FeatureSpec.validate`); a
  data error (a null under ``nulls="error"``) names the row counted from the first batch.
- Within a batch, features whose calls go to different backends run concurrently (a thread per
  backend); features that go to the same backend run one after the other; identical features
  (same column, operator, parameters, null policy and type) are computed once. A dictionary
  column is computed once per distinct value and then taken, so only its dictionary reaches a
  device. On a device, features with the same registry call over columns of one record form are
  merged into one call (one transfer).

Columns are prepared here (cast, dictionary, nulls) rather than by ``Runtime.call``'s own
``nulls=`` and dictionary handling: one policy then serves registry and compat ops alike (the
drop-ins take no ``nulls=``), errors name the feature and the row counted across batches, and the
placement and merging of calls need the prepared column. The runtime receives null-free numpy
keys and numbers (views of the Arrow buffers), Arrow byte records and list columns.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from offload import batch as _batch
from offload.ops import REGISTRY, OpCall, make_call, operator
from offload.runtime import BACKEND_FACTORIES, Runtime, default_runtime

__all__ = [
    "Feature",
    "FeatureSpec",
    "COMPAT_OPS",
    "LOGICAL_TYPES",
    "SPEC_FORMAT",
    "SPEC_VERSION",
    "logical_type",
    "bench_rows",
]

#: The ``"format"`` of the JSON form and its version (``FeatureSpec.from_json`` reads this one).
SPEC_FORMAT = "offload.FeatureSpec"
SPEC_VERSION = 1
#: The column types a feature may declare (``dtype=``): Arrow types by family. A dictionary
#: column has the type of its values; string, large_string and string_view are all "string".
LOGICAL_TYPES = (
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
    "binary",
    "list<int64>",
)
NullPolicy = Any  # "error" | "null" | a replacement value
_FIXED = {"int32": pa.int32(), "uint32": pa.uint32(), "int64": pa.int64(), "uint64": pa.uint64()}
_FLOATS = {"float32": pa.float32(), "float64": pa.float64()}
_ARROW = {**_FIXED, **_FLOATS, "string": pa.large_string(), "binary": pa.large_binary()}
_ARROW["list<int64>"] = pa.large_list(pa.int64())
_RECORDS = ("int32", "uint32", "int64", "uint64", "string", "binary")
_BACKENDS = ("auto", *BACKEND_FACTORIES)


def logical_type(t: Any) -> str:
    """The family name of an Arrow type as features declare it (``dtype=``): ``"int64"``,
    ``"string"`` (string, large_string, string_view and dictionaries of them), ``"list<int64>"``;
    other types by Arrow's own name (``"int16"``, ``"list<item: double>"``)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and t.value_type == pa.int64():
        return "list<int64>"
    if pa.types.is_float32(t) or pa.types.is_float64(t):
        return "float32" if pa.types.is_float32(t) else "float64"
    return str(t)


# ---------------------------------------------------------------------------------------------
# operators: the registry's and the compat drop-ins, behind one interface
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compat:
    """One ``offload.compat`` drop-in as a feature operator: the column types it takes, its
    result type, and the registry call it makes on the runtime (to place it on a backend)."""

    module: str
    function: str
    takes: tuple[str, ...]
    result: str
    placed_as: Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]]]

    def fn(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(f"offload.compat.{self.module}"), self.function)


def _farm_bucket(p: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    return "hash_bucket", {"num_buckets": p.get("num_buckets", p.get("num_bins", 1)), "hash": "farmhash64"}


#: The ``offload.compat`` functions a feature can name (``op="compat.tf.to_hash_bucket_fast"``).
#: Spark's row hashes are taken over the feature's one column.
COMPAT_OPS: dict[str, _Compat] = {
    "compat.tf.to_hash_bucket_fast": _Compat(
        "tf", "to_hash_bucket_fast", ("string", "binary"), "int64", _farm_bucket
    ),
    "compat.keras.hashing": _Compat(
        "keras", "hashing", ("int32", "int64", "string", "binary"), "int64", _farm_bucket
    ),
    "compat.spark.hash": _Compat(
        "spark",
        "hash",
        ("int32", "int64", "string", "binary"),
        "int32",
        lambda p: ("murmur3_32", {"seed": 42, "tail": "spark"}),
    ),
    "compat.spark.xxhash64": _Compat(
        "spark",
        "xxhash64",
        ("int32", "int64", "string", "binary"),
        "int64",
        lambda p: ("xxh64", {"seed": 42}),
    ),
    "compat.torcharrow.sigrid_hash": _Compat(
        "torcharrow",
        "sigrid_hash",
        ("int64",),
        "int64",
        lambda p: ("sigrid_hash", {"dtype": np.dtype(np.int64), **p}),
    ),
}
_RUN_KEYWORDS = ("backend", "verify", "runtime")  # a drop-in's run options: transform's, not the spec's


def _registry_takes(name: str) -> tuple[str, ...]:
    entry = operator(name)
    if entry.inputs == "records":
        return _RECORDS
    if entry.inputs == "sequences":
        return ("list<int64>",)
    if entry.inputs == "encoded":
        return ("binary",)
    dtype = next(p for p in entry.params if p.name == "dtype")
    out = []
    for t in ("int32", "int64", "float32", "float64"):  # what offload.batch.as_numbers reads
        try:
            dtype.check(np.dtype(t), {})
        except (TypeError, ValueError):
            continue
        out.append(t)
    return tuple(out)


def _takes(op: str) -> tuple[str, ...]:
    return COMPAT_OPS[op].takes if op in COMPAT_OPS else _registry_takes(op)


def _result_type(op: str) -> Any:
    if op in COMPAT_OPS:
        return pa.from_numpy_dtype(np.dtype(COMPAT_OPS[op].result))
    result = operator(op).result
    if result == "encoded":
        return pa.large_binary()
    if result == "sequences":
        return pa.large_list(pa.int64())
    return pa.from_numpy_dtype(np.dtype(result))


def _check_op(op: Any) -> str:
    if not isinstance(op, str):
        raise TypeError(f"op must be a str (an operator's name), got {type(op).__name__}")
    if op not in REGISTRY and op not in COMPAT_OPS:
        raise ValueError(
            f"unknown op {op!r}: expected a registry operator ({', '.join(REGISTRY)}) "
            f"or a compat function ({', '.join(COMPAT_OPS)})"
        )
    return op


def _short(op: str) -> str:
    """The op's part of a default output name: the function name of a compat op."""
    return op.rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------------------------
# canonical values (the JSON form and the fingerprint)
# ---------------------------------------------------------------------------------------------


def _canonical(value: Any, where: str) -> Any:
    """A parameter value in its canonical JSON form: ints as ints (an integral float too),
    floats by their shortest exact repr, ``±inf`` as ``"inf"``/``"-inf"``, bytes as
    ``{"bytes": hex}``, arrays and tuples as lists."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            raise ValueError(f"{where}: NaN has no canonical form")
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return int(v) if v.is_integer() and abs(v) < 2**63 else v
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, np.ndarray):
        return [_canonical(v, where) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_canonical(v, where) for v in value]
    raise TypeError(f"{where}: a {type(value).__name__} has no JSON form")


def _from_canonical(value: Any) -> Any:
    """The Python value of a canonical JSON value (inverse of :func:`_canonical` up to form)."""
    if isinstance(value, dict):
        if set(value) != {"bytes"} or not isinstance(value["bytes"], str):
            raise ValueError(f"a JSON object parameter must be {{'bytes': hex}}, got {value!r}")
        return bytes.fromhex(value["bytes"])
    if isinstance(value, list):
        return [_from_canonical(v) for v in value]
    if value in ("inf", "-inf"):
        return float(value)
    return value


def _boundaries_form(params: dict[str, Any]) -> dict[str, Any]:
    """``inf`` boundaries back to floats (their canonical form is a string)."""
    b = params.get("boundaries")
    if isinstance(b, list):
        params = dict(params, boundaries=[float(v) if v in ("inf", "-inf") else v for v in b])
    return params


# ---------------------------------------------------------------------------------------------
# Feature
# ---------------------------------------------------------------------------------------------

_FEATURE_KEYS = ("cast", "column", "dtype", "nulls", "op", "out", "params")


class Feature:
    """One operator applied to one column; immutable, compared by its canonical form.

    ``Feature(column, op, out=None, *, nulls="error", dtype=None, cast=False, **params)``:
    ``op`` a registry operator or ``"compat.<module>.<function>"``; ``out`` the output column
    (default ``f"{column}_{op}"``, a compat op by its function name); ``params`` the operator's
    parameters (validated here, defaults filled); ``dtype`` the column type the feature was
    written for (:data:`LOGICAL_TYPES`), ``cast`` whether another column type is cast to it;
    ``nulls`` ``"error"``, ``"null"`` or a replacement value.
    """

    __slots__ = ("column", "op", "out", "nulls", "dtype", "cast", "params", "_calls")

    column: str
    op: str
    out: str
    nulls: NullPolicy
    dtype: str | None
    cast: bool
    params: dict[str, Any]
    _calls: dict[str | None, OpCall]

    def __init__(
        self,
        column: str,
        op: str,
        out: str | None = None,
        *,
        nulls: NullPolicy = "error",
        dtype: str | None = None,
        cast: bool = False,
        **params: Any,
    ) -> None:
        if not isinstance(column, str) or not column:
            raise TypeError(f"column must be a non-empty str, got {column!r}")
        op = _check_op(op)
        if out is None:
            out = f"{column}_{_short(op)}"
        elif not isinstance(out, str) or not out:
            raise TypeError(f"out must be a non-empty str or None, got {out!r}")
        if dtype is not None and dtype not in LOGICAL_TYPES:
            raise ValueError(f"unknown dtype {dtype!r}: expected one of {', '.join(LOGICAL_TYPES)}")
        if not isinstance(cast, (bool, np.bool_)):
            raise TypeError(f"cast must be a bool, got {type(cast).__name__}")
        if cast and dtype is None:
            raise ValueError(f"feature {out!r}: cast=True needs dtype= (the type to cast the column to)")
        takes = _takes(op)
        if dtype is not None and dtype not in takes:
            raise TypeError(f"feature {out!r}: {op} does not take {dtype} columns (it takes {_or(takes)})")
        sets = object.__setattr__
        sets(self, "column", column)
        sets(self, "op", op)
        sets(self, "out", out)
        sets(self, "dtype", dtype)
        sets(self, "cast", bool(cast))
        sets(self, "_calls", {})
        sets(self, "params", self._validated(params))
        sets(self, "nulls", _null_policy(nulls, dtype, out))

    # -- parameters ---------------------------------------------------------------------------

    def _validated(self, params: dict[str, Any]) -> dict[str, Any]:
        """The canonical parameters, defaults filled, validated by the operator itself."""
        if self.op in COMPAT_OPS:
            return self._compat_params(params)
        entry = operator(self.op)
        numbers = entry.inputs == "numbers"
        if "dtype" in params:  # the registry's own dtype parameter is the column's type here
            raise TypeError(f"{self.op}() got an unexpected parameter 'dtype'")
        if numbers:
            call = make_call(self.op, dtype=self._number_dtype(params), **params)
        else:
            call = make_call(self.op, **params)
        return {
            k: _canonical(v, f"feature {self.out!r}: {k}") for k, v in call.params.items() if k != "dtype"
        }

    def _number_dtype(self, params: Mapping[str, Any]) -> np.dtype:
        """The dtype a numbers operator's parameters are checked against before the column is
        seen: the declared one, else int64 ids (sigrid_hash) or float64 values (bucketize)."""
        if self.dtype is not None:
            return np.dtype(self.dtype)
        takes = _takes(self.op)
        return np.dtype("float64" if "float64" in takes else takes[-1])

    def _compat_params(self, params: dict[str, Any]) -> dict[str, Any]:
        spec = COMPAT_OPS[self.op]
        fn = spec.fn()
        sig = inspect.signature(fn)
        names = [n for n in list(sig.parameters)[1:] if n not in _RUN_KEYWORDS]
        for k in params:
            if k not in names:
                raise TypeError(f"{self.op}() got an unexpected parameter {k!r}")
        full: dict[str, Any] = {}
        for n in names:
            p = sig.parameters[n]
            if n in params:
                full[n] = params[n]
            elif p.default is inspect.Parameter.empty or p.kind is inspect.Parameter.VAR_POSITIONAL:
                if p.kind is inspect.Parameter.VAR_POSITIONAL:
                    continue
                raise TypeError(f"{self.op}() missing required parameter {n!r}")
            else:
                full[n] = p.default
        fn(_empty(self._sample_type(full)), **full)  # the drop-in's own checks and messages
        return {k: _canonical(v, f"feature {self.out!r}: {k}") for k, v in full.items()}

    def _sample_type(self, params: Mapping[str, Any]) -> str:
        """The column type a compat op's parameters are checked with before a column is seen."""
        if self.dtype is not None:
            return self.dtype
        takes = _takes(self.op)
        mask = params.get("mask_value")
        if isinstance(mask, (int, np.integer)) and not isinstance(mask, bool) and "int64" in takes:
            return "int64"
        return "string" if "string" in takes else takes[0]

    def op_call(self, dtype: np.dtype | None = None) -> OpCall:
        """The registry call this feature makes (``dtype``: a numbers operator's column dtype)."""
        key = None if dtype is None else np.dtype(dtype).str
        call = self._calls.get(key)
        if call is None:
            params = _boundaries_form(dict(self.params))
            if operator(self.op).inputs == "numbers":
                params["dtype"] = np.dtype(dtype) if dtype is not None else self._number_dtype(params)
            call = self._calls[key] = make_call(self.op, **params)
        return call

    def compat_params(self) -> dict[str, Any]:
        """The drop-in's keyword arguments, in their Python form."""
        return {k: _from_canonical(v) for k, v in self.params.items()}

    # -- identity -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: every key, defaults filled (the JSON form of one feature)."""
        nulls = (
            self.nulls if self.nulls in ("error", "null") else {"replace": _canonical(self.nulls, "nulls")}
        )
        return {
            "column": self.column,
            "op": self.op,
            "out": self.out,
            "nulls": nulls,
            "dtype": self.dtype,
            "cast": self.cast,
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "feature") -> Feature:
        if not isinstance(d, Mapping):
            raise ValueError(f"{where} must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_FEATURE_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(_FEATURE_KEYS)})")
        for k in ("column", "op"):
            if k not in d:
                raise ValueError(f"{where}: missing key {k!r}")
        params = d.get("params", {})
        if not isinstance(params, Mapping):
            raise ValueError(f"{where}: params must be a JSON object, got {type(params).__name__}")
        nulls = d.get("nulls", "error")
        if isinstance(nulls, Mapping):
            if set(nulls) != {"replace"}:
                raise ValueError(
                    f"{where}: nulls must be 'error', 'null' or {{'replace': value}}, got {nulls!r}"
                )
            nulls = _from_canonical(nulls["replace"])
        elif nulls not in ("error", "null"):
            raise ValueError(f"{where}: nulls must be 'error', 'null' or {{'replace': value}}, got {nulls!r}")
        values = {k: _from_canonical(v) for k, v in params.items()}
        return cls(
            d["column"],
            d["op"],
            d.get("out"),
            nulls=nulls,
            dtype=d.get("dtype"),
            cast=d.get("cast", False),
            **_boundaries_form(values),
        )

    def _key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def _work_key(self) -> str:
        """Equal for features that compute the same column (whatever their output names)."""
        d = self.to_dict()
        del d["out"]
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Feature) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Feature is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_feature_from_dict, (self.to_dict(),))

    def __repr__(self) -> str:
        extra = [f"{k}={v!r}" for k, v in self.params.items()]
        if self.nulls != "error":
            extra.append(f"nulls={self.nulls!r}")
        if self.dtype is not None:
            extra.append(f"dtype={self.dtype!r}")
        if self.cast:
            extra.append("cast=True")
        return f"Feature({self.column!r}, {self.op!r}, {self.out!r}{''.join(', ' + e for e in extra)})"


def _feature_from_dict(d: Mapping[str, Any]) -> Feature:
    return Feature.from_dict(d)


def _or(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _null_policy(nulls: Any, dtype: str | None, out: str) -> NullPolicy:
    """``"error"``, ``"null"`` or a replacement value of the declared type."""
    if isinstance(nulls, str) and nulls in ("error", "null"):
        return nulls
    if nulls is None or isinstance(nulls, (bool, np.bool_)):
        raise TypeError(
            f"feature {out!r}: nulls must be 'error', 'null' or a replacement value, got {nulls!r}"
        )
    if isinstance(nulls, np.generic):
        nulls = nulls.item()
    if not isinstance(nulls, (int, float, str, bytes, list, tuple)):
        raise TypeError(
            f"feature {out!r}: nulls must be 'error', 'null' or a replacement value, "
            f"got a {type(nulls).__name__}"
        )
    if isinstance(nulls, float) and math.isnan(nulls):
        raise ValueError(f"feature {out!r}: a NaN replacement has no canonical form")
    if isinstance(nulls, tuple):
        nulls = list(nulls)
    if dtype is not None:
        _replacement_scalar(nulls, _ARROW[dtype], out)
    return nulls


def _replacement_scalar(value: Any, t: Any, out: str) -> Any:
    try:
        return pa.scalar(value, type=t)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
        raise TypeError(
            f"feature {out!r}: the null replacement {value!r} is not a {logical_type(t)} ({e})"
        ) from None


def _empty(dtype: str) -> Any:
    if dtype in _FIXED or dtype in _FLOATS:
        return np.zeros(0, np.dtype(dtype))
    return pa.array([], type=_ARROW[dtype])


# ---------------------------------------------------------------------------------------------
# FeatureSpec
# ---------------------------------------------------------------------------------------------

BackendArg = str | Mapping[str, str]
Data = Any  # pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch] | str | os.PathLike


class FeatureSpec:
    """An ordered set of features with unique output names; see the module docstring.

    ``FeatureSpec(features)``; ``spec.features``, ``spec.outputs``, ``spec.columns`` (the input
    columns read, in first-use order); :meth:`validate`, :meth:`output_schema`; :meth:`to_json`,
    :meth:`from_json`, :attr:`fingerprint`; :meth:`transform`, :meth:`transform_batches`,
    :meth:`transform_parquet`.
    """

    def __init__(self, features: Iterable[Feature]) -> None:
        if isinstance(features, (Feature, str, bytes)):
            raise TypeError("FeatureSpec takes a list of Feature")
        feats = tuple(features)
        for i, f in enumerate(feats):
            if not isinstance(f, Feature):
                raise TypeError(f"FeatureSpec: item {i} is a {type(f).__name__}, not a Feature")
        if not feats:
            raise ValueError("a FeatureSpec needs at least one feature")
        seen: dict[str, int] = {}
        for i, f in enumerate(feats):
            if f.out in seen:
                raise ValueError(
                    f"duplicate output name {f.out!r} (features {seen[f.out]} and {i}): "
                    "give one of them out=..."
                )
            seen[f.out] = i
        self.features: tuple[Feature, ...] = feats

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(f.out for f in self.features)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.column for f in self.features))

    def __len__(self) -> int:
        return len(self.features)

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.features)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureSpec) and self.features == other.features

    def __hash__(self) -> int:
        return hash(self.features)

    def __repr__(self) -> str:
        return "FeatureSpec([" + ", ".join(map(repr, self.features)) + "])"

    # -- JSON and the fingerprint -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "version": SPEC_VERSION,
            "features": [f.to_dict() for f in self.features],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The canonical JSON form (sorted keys, defaults filled); ``from_json`` reads it back
        into an equal spec whose ``to_json()`` is the same text."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, ensure_ascii=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSpec:
        """A spec from its JSON form: the format and version are checked, unknown keys refused."""
        try:
            d = json.loads(text)
        except ValueError as e:
            raise ValueError(f"FeatureSpec JSON: not valid JSON: {e}") from None
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: Any) -> FeatureSpec:
        if not isinstance(d, Mapping):
            raise ValueError(f"FeatureSpec JSON must be an object, got {type(d).__name__}")
        unknown = sorted(set(d) - {"format", "version", "features"})
        if unknown:
            raise ValueError(
                f"FeatureSpec JSON: unknown key {unknown[0]!r} (expected features, format, version)"
            )
        if d.get("format") != SPEC_FORMAT:
            raise ValueError(f"FeatureSpec JSON: format must be {SPEC_FORMAT!r}, got {d.get('format')!r}")
        if d.get("version") != SPEC_VERSION:
            raise ValueError(
                f"FeatureSpec JSON: unsupported version {d.get('version')!r} "
                f"(this offload reads version {SPEC_VERSION})"
            )
        feats = d.get("features")
        if not isinstance(feats, list):
            raise ValueError(f"FeatureSpec JSON: features must be a list, got {type(feats).__name__}")
        return cls(Feature.from_dict(f, f"FeatureSpec JSON: feature {i}") for i, f in enumerate(feats))

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical JSON form, compact: the same in every process and on
        every machine for equal specs, different when any feature's field or parameter differs."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    # -- schema ---------------------------------------------------------------------------------

    def validate(self, schema: Any, keep: Sequence[str] = ()) -> None:
        """Check the spec against a table's schema (exact errors, before any operator runs): every
        column present, of a type its operator takes, of the declared type (or ``cast=True``);
        numbers operators' parameters against the column's dtype; the ``keep`` columns present and
        distinct from the outputs."""
        names = list(schema.names)
        for f in self.features:
            if f.column not in names:
                raise ValueError(
                    f"feature {f.out!r}: column {f.column!r} is not in the table "
                    f"(its columns: {', '.join(map(repr, names)) or 'none'})"
                )
            _check_type(f, schema.field(f.column).type)
        _check_keep(self, names, keep)

    def output_schema(self, schema: Any, keep: Sequence[str] = ()) -> Any:
        """The schema of :meth:`transform`'s result for input ``schema`` (validated)."""
        self.validate(schema, keep)
        fields = [pa.field(f.out, _result_type(f.op), nullable=f.nulls == "null") for f in self.features]
        fields += [schema.field(k) for k in keep]
        return pa.schema(fields)

    # -- transform ------------------------------------------------------------------------------

    def transform(
        self,
        data: Data,
        *,
        backend: BackendArg = "auto",
        runtime: Runtime | None = None,
        keep: Sequence[str] = (),
    ) -> Any:
        """Every feature of ``data`` -> a ``pa.Table``: one column per feature (``out``, spec
        order), then the ``keep`` input columns.

        ``data``: a ``pa.Table``, a ``pa.RecordBatch``, an iterable of record batches or a Parquet
        file/dataset path. ``backend``: ``"auto"``, a backend name, or a mapping from output name
        to backend (unnamed features: ``"auto"``). ``runtime``: the Runtime to run on (default:
        the process's). Errors: see :meth:`validate`; a null under ``nulls="error"`` is a
        ``ValueError`` naming the feature, the column and the row.
        """
        keep = _keep_list(keep)
        if isinstance(data, pa.Table):
            schema = self.output_schema(data.schema, keep)
            out = list(
                self.transform_batches(_table_batches(data), backend=backend, runtime=runtime, keep=keep)
            )
            return pa.Table.from_batches(out, schema=schema)
        if isinstance(data, pa.RecordBatch):
            return pa.Table.from_batches(
                list(self.transform_batches([data], backend=backend, runtime=runtime, keep=keep))
            )
        if isinstance(data, (str, os.PathLike)):
            dataset = _dataset(data)
            schema = self.output_schema(dataset.schema, keep)
            batches = _scan(dataset, self.columns, keep, 1 << 20)
            out = list(self.transform_batches(batches, backend=backend, runtime=runtime, keep=keep))
            return pa.Table.from_batches(out, schema=schema)
        if isinstance(data, Iterable):
            batches = _peek_schema(iter(data))
            out = list(self.transform_batches(batches, backend=backend, runtime=runtime, keep=keep))
            if not out:
                raise ValueError("transform: the iterable of record batches is empty (no schema to go by)")
            return pa.Table.from_batches(out)
        raise TypeError(
            f"transform takes a pa.Table, a pa.RecordBatch, an iterable of record batches or a "
            f"Parquet path, got {type(data).__name__}"
        )

    def transform_batches(
        self,
        batches: Iterable[Any],
        *,
        backend: BackendArg = "auto",
        runtime: Runtime | None = None,
        keep: Sequence[str] = (),
    ) -> Iterator[Any]:
        """One output ``pa.RecordBatch`` per input record batch, in order, with the rows in
        order (the streaming form of :meth:`transform`). The first batch's schema is validated;
        a later batch with another schema is validated again."""
        keep = _keep_list(keep)
        rt = _runtime(runtime)
        choices = _backend_choices(self, backend)
        runner = _Runner(self, rt, choices, keep)
        try:
            yield from runner.run(batches)
        finally:
            runner.close()

    def transform_parquet(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        *,
        batch_rows: int = 131_072,
        backend: BackendArg = "auto",
        runtime: Runtime | None = None,
        keep: Sequence[str] = (),
        progress: bool | None = None,
    ) -> dict[str, Any]:
        """Stream a Parquet file or dataset ``src`` through the spec into the Parquet file
        ``dst``, ``batch_rows`` rows at a time (memory stays about a few batches, whatever the
        dataset's size). ``progress``: a tqdm bar on stderr when it is a terminal (None), always
        (True) or never (False). The file appears only when complete (written beside it, then
        renamed). Returns ``{"rows", "batches", "seconds", "rows_per_s", "path"}``."""
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise ValueError(f"batch_rows must be a positive int, got {batch_rows!r}")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool or None, got {type(progress).__name__}")
        import pyarrow.parquet as pq
        from tqdm import tqdm  # type: ignore[import-untyped]

        keep = _keep_list(keep)
        dataset = _dataset(src)
        schema = self.output_schema(dataset.schema, keep)
        dst = os.fspath(dst)
        tmp = f"{dst}.tmp-{os.getpid()}"
        rows = batches = 0
        t0 = time.perf_counter()
        bar = tqdm(
            total=dataset.count_rows(),
            unit="rows",
            unit_scale=True,
            desc="featurize",
            disable=None if progress is None else not progress,
            file=sys.stderr,
        )
        try:
            with pq.ParquetWriter(tmp, schema, use_dictionary=_few_values(self, keep)) as writer:
                background = _Writer(writer)
                try:
                    scan = _scan(dataset, self.columns, keep, batch_rows)
                    for out in self.transform_batches(scan, backend=backend, runtime=runtime, keep=keep):
                        background.put(out)
                        rows += out.num_rows
                        batches += 1
                        bar.update(out.num_rows)
                finally:
                    background.close()
            os.replace(tmp, dst)
        finally:
            bar.close()
            if os.path.exists(tmp):
                os.unlink(tmp)
        seconds = time.perf_counter() - t0
        return {
            "rows": rows,
            "batches": batches,
            "seconds": seconds,
            "rows_per_s": rows / seconds if seconds else 0.0,
            "path": dst,
        }


class _Writer:
    """A ParquetWriter fed from a thread of its own: the next batches are read and transformed
    while one is encoded (measured: encoding took as long as reading and transforming together).
    At most two batches wait; the first write error is raised by the next ``put`` or ``close``."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="offload-parquet-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (batch := self.queue.get()) is not None:
            if self.error is None:  # after an error, drain without writing
                try:
                    self.writer.write_batch(batch)
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                    self.error = e

    def put(self, batch: Any) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(batch)

    def close(self) -> None:
        """Wait for the queued batches to be written; raise the write error, if any."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


#: An output column takes Parquet dictionary encoding when its values are at most this many.
_DICTIONARY_MAX = 1 << 16


def _few_values(spec: FeatureSpec, keep: Sequence[str]) -> list[str]:
    """The output columns worth a Parquet dictionary: features with few possible values
    (bucketize, small bucket counts) and the ``keep`` columns. A hash column is nearly unique,
    and the writer's attempt at a dictionary before it falls back cost 2.5x the write time."""
    few = [f.out for f in spec.features if _value_count(f) <= _DICTIONARY_MAX]
    return few + list(keep)


def _value_count(f: Feature) -> float:
    """How many distinct values the feature can take (infinite when unbounded or unknown)."""
    p = f.params
    if f.op == "bucketize":
        return len(p["boundaries"]) + 1
    for name in ("num_buckets", "num_bins", "max_value"):
        if isinstance(p.get(name), int):
            return float(p[name])
    return math.inf


# ---------------------------------------------------------------------------------------------
# schema checks
# ---------------------------------------------------------------------------------------------


def _check_type(f: Feature, t: Any) -> None:
    """The column type ``t`` against what the op takes and the declared type (exact errors)."""
    logical = logical_type(t)
    takes = _takes(f.op)
    if f.dtype is not None and logical != f.dtype:
        if not f.cast:
            hint = (
                " (the same id would hash differently)" if logical in _RECORDS and f.dtype in _RECORDS else ""
            )
            raise TypeError(
                f"feature {f.out!r}: column {f.column!r} is {logical}, the spec was written for "
                f"{f.dtype}{hint}: cast the column, or declare the feature with cast=True"
            )
        logical = f.dtype
    if logical not in takes:
        raise TypeError(f"feature {f.out!r}: column {f.column!r} is {logical}, {f.op} takes {_or(takes)}")
    if f.op in REGISTRY and operator(f.op).inputs == "numbers":
        f.op_call(np.dtype(logical))  # e.g. boundaries not representable in the column's dtype
    elif f.op in COMPAT_OPS and f.dtype is None:
        COMPAT_OPS[f.op].fn()(_empty(logical), **f.compat_params())


def _keep_list(keep: Any) -> list[str]:
    if isinstance(keep, str):
        raise TypeError(f"keep must be a list of column names, got the str {keep!r}")
    names = list(keep)
    for k in names:
        if not isinstance(k, str):
            raise TypeError(f"keep must be a list of column names, got a {type(k).__name__}")
    return names


def _check_keep(spec: FeatureSpec, names: list[str], keep: Sequence[str]) -> None:
    outputs = set(spec.outputs)
    seen: set[str] = set()
    for k in keep:
        if k not in names:
            raise ValueError(
                f"keep column {k!r} is not in the table "
                f"(its columns: {', '.join(map(repr, names)) or 'none'})"
            )
        if k in outputs:
            raise ValueError(
                f"keep column {k!r} is also a feature's output name: rename the feature (out=...)"
            )
        if k in seen:
            raise ValueError(f"keep column {k!r} is listed twice")
        seen.add(k)


def _backend_choices(spec: FeatureSpec, backend: Any) -> dict[str, str]:
    """Each output name's ``backend=`` choice."""
    if isinstance(backend, str):
        _check_backend(backend)
        return dict.fromkeys(spec.outputs, backend)
    if not isinstance(backend, Mapping):
        raise TypeError(
            f"backend must be a str or a mapping of output name to backend, got {type(backend).__name__}"
        )
    for name, b in backend.items():
        if name not in spec.outputs:
            raise ValueError(
                f"backend= names {name!r}, which is not a feature's output "
                f"(the outputs: {', '.join(spec.outputs)})"
            )
        _check_backend(b)
    return {o: backend.get(o, "auto") for o in spec.outputs}


def _check_backend(name: Any) -> None:
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}: expected {_or([repr(b) for b in _BACKENDS])}")


def _runtime(runtime: Runtime | None) -> Runtime:
    if runtime is None:
        return default_runtime()
    if not isinstance(runtime, Runtime):
        raise TypeError(f"runtime must be an offload.Runtime or None, got {type(runtime).__name__}")
    return runtime


# ---------------------------------------------------------------------------------------------
# data sources
# ---------------------------------------------------------------------------------------------

#: A table whose chunks are smaller than this on average is combined into one chunk first
#: (fewer operator calls); larger chunks are transformed one record batch at a time.
_SMALL_CHUNK = 65_536


def _table_batches(table: Any) -> list[Any]:
    batches = table.to_batches()
    if len(batches) > 1 and table.num_rows / len(batches) < _SMALL_CHUNK:
        batches = table.unify_dictionaries().combine_chunks().to_batches()
    if not batches:
        batches = [pa.RecordBatch.from_pylist([], schema=table.schema)]
    return batches


def _dataset(src: Any) -> Any:
    import pyarrow.dataset as ds

    try:
        return ds.dataset(os.fspath(src), format="parquet")
    except (FileNotFoundError, pa.ArrowInvalid) as e:
        raise ValueError(f"cannot read the Parquet dataset {os.fspath(src)!r}: {e}") from None


def _scan(dataset: Any, columns: Sequence[str], keep: Sequence[str], batch_rows: int) -> Iterator[Any]:
    """The record batches of the columns read, file by file, with little in flight.

    Each file is read by ``ParquetFile.iter_batches`` over a buffered stream, which decodes a
    row group page by page (measured on 1M-row row groups: 29 MiB of Arrow memory in flight,
    against 175 MiB for a dataset scanner and 830 MiB with its pre-buffering). A dataset whose
    files do not all hold the wanted columns with the dataset's types (partition columns, types
    unified across files) is read by the dataset's scanner instead, without pre-buffering."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    names = set(dataset.schema.names)
    wanted = [c for c in dict.fromkeys([*columns, *keep]) if c in names]
    target = pa.schema([dataset.schema.field(c) for c in wanted])
    if all(_holds(pq.read_schema(path), target) for path in dataset.files):
        for path in dataset.files:  # one file open at a time
            with pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as f:
                for b in f.iter_batches(batch_size=batch_rows, columns=wanted):
                    if b.num_rows:
                        yield b.select(wanted)
        return
    scanner = dataset.scanner(
        columns=wanted,
        batch_size=batch_rows,
        batch_readahead=2,
        fragment_readahead=1,
        fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False),
    )
    for b in scanner.to_batches():
        if b.num_rows:
            yield b


def _holds(schema: Any, target: Any) -> bool:
    """Whether a file's schema has every field of ``target`` with the same type."""
    names = set(schema.names)
    return all(f.name in names and schema.field(f.name).type == f.type for f in target)


def _peek_schema(it: Iterator[Any]) -> Iterator[Any]:
    for i, b in enumerate(it):
        if not isinstance(b, pa.RecordBatch):
            raise TypeError(
                f"transform: item {i} of the iterable is a {type(b).__name__}, not a pa.RecordBatch"
            )
        yield b


# ---------------------------------------------------------------------------------------------
# running a batch
# ---------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """One feature's column, ready for its operator: ``values`` in the form the operator takes,
    ``take`` the dictionary indices to expand the result with (None: one value per row),
    ``mask`` the rows whose output is null (None: none)."""

    values: Any
    n: int
    take: np.ndarray | None
    mask: np.ndarray | None


class _Runner:
    """Runs a spec over record batches: schema checks, then each batch's features grouped by the
    backend they go to, one thread per group."""

    def __init__(self, spec: FeatureSpec, rt: Runtime, choices: dict[str, str], keep: list[str]) -> None:
        self.spec = spec
        self.rt = rt
        self.choices = choices
        self.keep = keep
        self.schema: Any = None
        self.out_schema: Any = None
        self.pool: ThreadPoolExecutor | None = None
        # one computation per distinct feature: feature i takes the result of feature source[i]
        first: dict[str, int] = {}
        self.source = [first.setdefault(f._work_key(), i) for i, f in enumerate(spec.features)]
        self.firsts = sorted(set(self.source))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def run(self, batches: Iterable[Any]) -> Iterator[Any]:
        base = 0
        for b in batches:
            if not isinstance(b, pa.RecordBatch):
                raise TypeError(f"transform_batches takes pa.RecordBatch items, got a {type(b).__name__}")
            if self.schema is None or not b.schema.equals(self.schema):
                self.out_schema = self.spec.output_schema(b.schema, self.keep)
                self.schema = b.schema
            yield self.batch(b, base)
            base += b.num_rows

    def batch(self, b: Any, base: int) -> Any:
        feats = self.spec.features
        prepared = {i: _prepare(feats[i], b.column(feats[i].column), base) for i in self.firsts}
        groups: dict[str, list[int]] = {}
        for i in self.firsts:
            groups.setdefault(self.place(feats[i], prepared[i]), []).append(i)
        results: dict[int, Any] = {}
        if len(groups) == 1:
            ((name, members),) = groups.items()
            results.update(self._group(name, members, prepared))
        else:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(
                    max_workers=len(BACKEND_FACTORIES), thread_name_prefix="offload-feature"
                )
            futures: list[tuple[int, Future[dict[int, Any]]]] = []
            for name, members in groups.items():
                futures.append((members[0], self.pool.submit(self._group, name, members, prepared)))
            for _, fut in sorted(futures, key=lambda mf: mf[0]):  # the first feature's error first
                results.update(fut.result())
        arrays = [results[i] for i in self.source]
        arrays += [b.column(k) for k in self.keep]
        return pa.RecordBatch.from_arrays(arrays, schema=self.out_schema)

    def _group(self, name: str, members: list[int], prepared: dict[int, _Prepared]) -> dict[int, Any]:
        """One backend's features, one after the other; on a device, the features with the
        same call over columns of one record form are merged into one call (one transfer)."""
        feats = self.spec.features
        units: dict[Any, list[int]] = {}
        for i in members:
            key = _merge_key(feats[i], prepared[i], self.choices[feats[i].out]) if name != "cpu" else None
            units.setdefault(key if key is not None else ("alone", i), []).append(i)
        out: dict[int, Any] = {}
        for unit in units.values():
            if len(unit) == 1:
                out[unit[0]] = _compute(
                    feats[unit[0]], prepared[unit[0]], self.rt, self.choices[feats[unit[0]].out]
                )
            else:
                merged = _compute_merged(
                    [feats[i] for i in unit],
                    [prepared[i] for i in unit],
                    self.rt,
                    self.choices[feats[unit[0]].out],
                )
                out.update(zip(unit, merged))
        return out

    def place(self, f: Feature, p: _Prepared) -> str:
        """The backend the feature's call will run on (the runtime's own choice, predicted)."""
        choice = self.choices[f.out]
        if choice != "auto":
            return choice
        try:
            call, records = _placed_call(f, p)
        except (TypeError, ValueError):
            return "cpu"  # the call itself will raise the exact error
        for name in self.rt.order:
            if not self.rt.availability(name).ok:
                continue
            if self.rt.backend(name).supports(call, records) is None:
                return name
        return "cpu"


def _placed_call(f: Feature, p: _Prepared) -> tuple[OpCall, Any]:
    """The registry call and normalised batch the feature's call reaches the runtime with (a
    compat op's: the call it makes on the runtime, over the column as it stands; close enough to
    pick the backend, which is all this is for)."""
    if f.op in COMPAT_OPS:
        name, params = COMPAT_OPS[f.op].placed_as(f.compat_params())
        call = make_call(name, **params)
        if operator(name).inputs == "numbers":
            return call, _batch.as_numbers(p.values, name)
        return call, _batch.as_records(p.values)
    entry = operator(f.op)
    if entry.inputs == "numbers":
        return f.op_call(p.values.dtype), _batch.as_numbers(p.values, f.op)
    if entry.inputs == "sequences":
        return f.op_call(), _batch.as_sequences(p.values)
    if entry.inputs == "encoded":
        return f.op_call(), _batch.as_encoded(*p.values)
    return f.op_call(), _batch.as_records(p.values)


def _prepare(f: Feature, col: Any, base: int) -> _Prepared:
    """The column as the operator takes it: cast to the declared type (``cast=True``),
    a dictionary split into its values and indices, nulls refused, masked or replaced."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    take: Any = None
    values = col
    if pa.types.is_dictionary(col.type):
        if len(col.dictionary) < n and col.dictionary.null_count == 0:
            values, take = col.dictionary, col.indices
        else:  # a dictionary as large as the column: decoding costs less than a take
            values = col.cast(col.type.value_type)
    if f.cast and logical_type(values.type) != f.dtype:
        values = _cast(f, values)
    nulls = take if take is not None else values
    mask = None
    if nulls.null_count:
        mask = np.asarray(nulls.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if f.nulls == "error":
            i = int(np.flatnonzero(mask)[0])
            raise ValueError(
                f"feature {f.out!r}: null at row {base + i} of column {f.column!r} "
                "(nulls='error': declare nulls='null' or a replacement value)"
            )
        values, take = _fill(f, values, take, mask)
        if f.nulls != "null":
            mask = None
    return _Prepared(_op_input(f, values), n, _indices(take), mask)


def _cast(f: Feature, values: Any) -> Any:
    try:
        return values.cast(_ARROW[f.dtype] if f.dtype in _ARROW else f.dtype)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(
            f"feature {f.out!r}: cannot cast column {f.column!r} from {values.type} to {f.dtype}: {e}"
        ) from None


def _fill(f: Feature, values: Any, take: Any, mask: np.ndarray) -> tuple[Any, Any]:
    """The values and indices with every null given a value: the replacement, or (for
    ``nulls="null"``) any valid value, whose result is masked afterwards."""
    if f.nulls == "null":
        if take is not None:  # an all-null column may come with an empty dictionary
            filler = values if len(values) else pa.array([_placeholder(values.type).as_py()], values.type)
            return filler, take.fill_null(0)
        return values.fill_null(_placeholder(values.type)), None
    scalar = _replacement_scalar(f.nulls, values.type, f.out)
    if take is not None:
        extended = pa.concat_arrays([values, pa.array([scalar.as_py()], type=values.type)])
        return extended, take.fill_null(len(values))
    return values.fill_null(scalar), None


def _placeholder(t: Any) -> Any:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.scalar([], type=t)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.scalar("", type=t)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.scalar(b"", type=t)
    return pa.scalar(0, type=t)


def _indices(take: Any) -> np.ndarray | None:
    if take is None:
        return None
    return np.asarray(take.to_numpy(zero_copy_only=False))


def _op_input(f: Feature, values: Any) -> Any:
    """Arrow values in the form the runtime and the drop-ins read in place: numbers as numpy
    (zero-copy), string/binary and lists as Arrow, view types as their large form."""
    t = values.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return values.to_numpy(zero_copy_only=False)
    if pa.types.is_string_view(t):
        values = values.cast(pa.large_string())
    elif pa.types.is_binary_view(t):
        values = values.cast(pa.large_binary())
    if f.op in REGISTRY and operator(f.op).inputs == "encoded":
        offsets, data = _batch.as_records(values).contiguous()  # type: ignore[union-attr]
        return (np.asarray(offsets, np.int64), data)
    return values


def _merge_key(f: Feature, p: _Prepared, backend: str) -> Any:
    """Features with equal keys make one call together: a registry operator taking records or
    numbers, the same parameters and backend choice, and columns of one record form (keys of one
    width, byte records, or numbers of one dtype). None: the feature runs alone."""
    if f.op in COMPAT_OPS or operator(f.op).inputs not in ("records", "numbers"):
        return None
    v = p.values
    if isinstance(v, np.ndarray):
        form: Any = (
            ("keys", v.dtype.itemsize) if operator(f.op).inputs == "records" else ("numbers", v.dtype.str)
        )
    else:
        form = ("bytes",)
    return (f.op, json.dumps(f.params, sort_keys=True), backend, form)


def _compute_merged(feats: list[Feature], prepared: list[_Prepared], rt: Runtime, backend: str) -> list[Any]:
    """One operator call over the concatenated columns of features with one merge key, split
    back per feature (keys are concatenated; byte records travel as the chunks they are)."""
    f0, parts = feats[0], [p.values for p in prepared]
    if isinstance(parts[0], np.ndarray):
        unsigned = operator(f0.op).inputs == "records"
        views = [np.ascontiguousarray(v).reshape(-1) for v in parts]
        if unsigned:
            views = [v.view(np.dtype(f"u{v.dtype.itemsize}")) for v in views]
        combined: Any = np.concatenate(views)
        sizes = [v.shape[0] for v in views]
    else:
        records = [_batch.as_records(v) for v in parts]
        combined = _batch.VarRecords(tuple(c for r in records for c in r.chunks))  # type: ignore[union-attr]
        sizes = [r.n for r in records]
    params = _boundaries_form(dict(f0.params))
    res = np.asarray(rt.call(f0.op, combined, backend=backend, **params))  # type: ignore[arg-type]
    pieces = np.split(res, np.cumsum(sizes)[:-1])
    return [_to_arrow(f, piece, p) for f, piece, p in zip(feats, pieces, prepared)]


def _compute(f: Feature, p: _Prepared, rt: Runtime, backend: str) -> Any:
    """Run the feature's operator on its prepared column: an Arrow array of ``p.n`` rows."""
    if f.op in COMPAT_OPS:
        res = COMPAT_OPS[f.op].fn()(p.values, backend=backend, runtime=rt, **f.compat_params())
    else:
        params = _boundaries_form(dict(f.params))
        res = rt.call(f.op, p.values, backend=backend, **params)  # type: ignore[arg-type]
    return _to_arrow(f, res, p)


def _to_arrow(f: Feature, res: Any, p: _Prepared) -> Any:
    t = _result_type(f.op)
    if isinstance(res, tuple):  # (offsets, data) or (value_offsets, values)
        offsets, data = res
        m = len(offsets) - 1
        if pa.types.is_large_binary(t):
            arr = pa.Array.from_buffers(
                t, m, [None, pa.py_buffer(np.ascontiguousarray(offsets, np.int64)), pa.py_buffer(data)]
            )
        else:
            arr = pa.LargeListArray.from_arrays(pa.array(np.asarray(offsets, np.int64)), pa.array(data))
        if p.take is not None:
            arr = arr.take(pa.array(p.take))
        if p.mask is not None:
            arr = _with_mask(arr, p.mask)
        return arr
    res = np.asarray(res).reshape(-1)
    if p.take is not None:
        res = res[p.take]
    return pa.array(res, type=t, mask=p.mask)


def _with_mask(arr: Any, mask: np.ndarray) -> Any:
    """``arr`` (no nulls of its own, offset 0) with the rows of ``mask`` null."""
    if pa.types.is_large_list(arr.type):
        return pa.LargeListArray.from_arrays(arr.offsets, arr.values, mask=pa.array(mask))
    validity = pa.py_buffer(np.packbits(~mask, bitorder="little").tobytes())
    return pa.Array.from_buffers(arr.type, len(arr), [validity, *arr.buffers()[1:]], offset=arr.offset)


# ---------------------------------------------------------------------------------------------
# benchmarks (the "features" bench group)
# ---------------------------------------------------------------------------------------------


def bench_table(n: int, seed: int = 12345) -> Any:
    """The benchmark's table: int64 ids, a string category (1k distinct), float32 prices and
    list<int64> click histories (0-8 clicks)."""
    rng = np.random.default_rng(seed)
    cats = np.array([f"category-{i:04d}|{'US' if i % 3 else 'DE'}" for i in range(1000)], dtype=object)
    lengths = rng.integers(0, 9, n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    clicks = rng.integers(1_700_000_000, 1_700_100_000, int(offsets[-1]), dtype=np.int64)
    return pa.table(
        {
            "user_id": rng.integers(0, 2**62, n, dtype=np.int64),
            "item_id": rng.integers(0, 2**62, n, dtype=np.int64),
            "category": pa.array(cats[rng.integers(0, 1000, n)], pa.string()),
            "price": rng.gamma(2.0, 20.0, n).astype(np.float32),
            "clicks": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(clicks)),
        }
    )


def bench_spec() -> FeatureSpec:
    """Five features, one per column of :func:`bench_table`."""
    return FeatureSpec(
        [
            Feature("user_id", "hash_bucket", num_buckets=1_000_003, dtype="int64"),
            Feature("item_id", "fid", slot=42, dtype="int64"),
            Feature("category", "hash_bucket", num_buckets=10_007, dtype="string"),
            Feature("price", "bucketize", boundaries=[float(2**i) for i in range(16)], dtype="float32"),
            Feature("clicks", "delta_varint_encode", dtype="list<int64>"),
        ]
    )


def bench_rows(quick: bool) -> list[dict[str, Any]]:
    """Rows of ``offload.bench.row`` for a "features" bench group: a 5-feature spec's transform
    on the CPU backend against the same operator calls on plain numpy inputs (target 0.8x), and
    a dictionary column (1k distinct values) against the same column as plain strings (5x)."""
    from offload.bench import best as _best
    from offload.bench import row

    n = 200_000 if quick else 1_000_000
    reps = 2 if quick else 5
    rt = Runtime(["cpu"])
    table = bench_table(n)
    spec = bench_spec()
    plain = _numpy_columns(table)

    def direct() -> None:
        for f in spec.features:
            rt.call(f.op, plain[f.column], backend="cpu", **_boundaries_form(dict(f.params)))

    t_spec = _best(lambda: spec.transform(table, backend="cpu", runtime=rt), reps)
    t_direct = _best(direct, reps)
    rows = [
        row(
            f"FeatureSpec.transform, 5 features x {n:,} rows, cpu",
            n / t_spec / 1e6,
            "M rows/s",
            baseline=n / t_direct / 1e6,
            baseline_unit="M rows/s (the 5 operator calls on numpy inputs)",
            target=0.8,
            target_kind="ratio",
            note="hash_bucket(int64), fid(int64), hash_bucket(string), bucketize(float32, 16), "
            "delta_varint_encode(list<int64>)",
        )
    ]
    cats = pa.array(np.asarray(table.column("category").combine_chunks().to_numpy(zero_copy_only=False)))
    dict_table = pa.table({"category": cats.dictionary_encode()})
    str_table = pa.table({"category": cats})
    one = FeatureSpec([Feature("category", "hash_bucket", num_buckets=10_007, dtype="string")])
    t_dict = _best(lambda: one.transform(dict_table, backend="cpu", runtime=rt), reps)
    t_str = _best(lambda: one.transform(str_table, backend="cpu", runtime=rt), reps)
    rows.append(
        row(
            f"dictionary column, 1k distinct of {n:,} rows, hash_bucket",
            n / t_dict / 1e6,
            "M rows/s",
            baseline=n / t_str / 1e6,
            baseline_unit="M rows/s (the column as plain strings)",
            target=5,
            target_kind="ratio",
            note="hashed once per distinct value, then taken",
        )
    )
    return rows


def _numpy_columns(table: Any) -> dict[str, Any]:
    """The benchmark table's columns as plain numpy inputs of the operators."""
    out: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_large_list(col.type):
            out[name] = (np.asarray(col.offsets), np.asarray(col.values))
        elif pa.types.is_string(col.type):
            offsets, data = _batch.as_records(col).contiguous()  # type: ignore[union-attr]
            out[name] = (np.array(offsets, np.int64), np.array(data))
        else:
            out[name] = col.to_numpy()
    return out
