"""Operator specs: validated calls, result types and the golden reference per record.

An :class:`OpCall` is an operator with checked parameters. Backends receive an OpCall and a
normalised batch (``offload.batch``); the runtime uses :func:`golden_result` to verify any record
of any backend against ``offload.golden``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from offload import golden

__all__ = ["OPERATORS", "HASH_OPS", "OpCall", "make_call", "result_dtype", "golden_result",
           "check_boundaries"]

HASH_OPS = ("xxh32", "xxh64", "hash_bucket", "fid")
OPERATORS = HASH_OPS + ("bucketize", "delta_varint_encode", "delta_varint_decode")

_RESULT_DTYPES = {"xxh32": np.uint32, "xxh64": np.uint64, "hash_bucket": np.int64,
                  "fid": np.uint64, "bucketize": np.int32}


@dataclass(frozen=True)
class OpCall:
    """One operator with validated parameters (only the ones it uses are meaningful)."""
    op: str
    seed: int = 0
    num_buckets: int = 0
    method: str = "mod"
    slot: int = 0
    version: int = 2
    boundaries: np.ndarray | None = field(default=None, compare=False)
    right: bool = True

    def describe(self) -> str:
        p = {"xxh32": f"seed={self.seed}", "xxh64": f"seed={self.seed}",
             "hash_bucket": f"num_buckets={self.num_buckets}, seed={self.seed}, method={self.method!r}",
             "fid": f"slot={self.slot}, version={self.version}, seed={self.seed}",
             "bucketize": f"{0 if self.boundaries is None else len(self.boundaries)} boundaries, "
                          f"right={self.right}"}.get(self.op, "")
        return f"{self.op}({p})"


def result_dtype(op: str) -> type:
    return _RESULT_DTYPES[op]


def _check_int(name: str, value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in {what}, got {v}")
    return v


def _check_seed(seed: Any, bits: int) -> int:
    return _check_int("seed", seed, 0, (1 << bits) - 1, f"[0, 2**{bits})")


def check_boundaries(boundaries: Any, dtype: np.dtype) -> np.ndarray:
    """Boundaries as an array of ``dtype``: 1-D, strictly increasing, no NaN, exactly representable."""
    if isinstance(boundaries, np.ma.MaskedArray) and np.ma.getmaskarray(boundaries).any():
        first = int(np.argwhere(np.ma.getmaskarray(boundaries))[0][0])
        raise ValueError(f"boundaries must not be masked (boundaries[{first}])")
    if isinstance(boundaries, np.ndarray):
        b = np.ma.getdata(boundaries)
    else:
        try:
            b = np.asarray(boundaries)
        except (ValueError, TypeError) as e:
            raise TypeError(f"boundaries must be a 1-D array of numbers: {e}") from None
    if b.ndim != 1:
        raise ValueError(f"boundaries must be 1-D, got shape {b.shape}")
    if b.size == 0:
        return np.zeros(0, dtype)
    if b.dtype.kind not in "iuf":
        raise TypeError(f"boundaries must be numbers, got dtype {b.dtype}")
    if b.dtype.kind == "f":
        nan = np.flatnonzero(np.isnan(b))
        if nan.size:
            raise ValueError(f"boundaries must not contain NaN (boundaries[{int(nan[0])}])")
    # Exact representability, checked value by value with Python numbers (no silent wrap).
    target = np.dtype(dtype)
    for i, v in enumerate(b.tolist()):
        if target.kind == "i":
            info = np.iinfo(target)
            if isinstance(v, float) and (math.isinf(v) or v != math.floor(v)):
                raise ValueError(f"boundaries[{i}] = {v!r} is not exactly representable in {target}")
            if not info.min <= v <= info.max:
                raise ValueError(f"boundaries[{i}] = {v!r} is not exactly representable in {target}")
        else:
            if isinstance(v, int) and int(np.array(v, dtype=target).item()) != v:
                raise ValueError(f"boundaries[{i}] = {v!r} is not exactly representable in {target}")
            if isinstance(v, float) and not math.isinf(v) and float(np.array(v, dtype=target)) != v:
                raise ValueError(f"boundaries[{i}] = {v!r} is not exactly representable in {target}")
    out = b.astype(target)
    if out.size > 1:
        bad = np.flatnonzero(~(out[1:] > out[:-1]))
        if bad.size:
            i = int(bad[0]) + 1
            raise ValueError(f"boundaries must be strictly increasing: boundaries[{i}] = "
                             f"{out[i].item()!r} <= boundaries[{i - 1}] = {out[i - 1].item()!r}")
    return np.ascontiguousarray(out)


_CALLS: dict[tuple[Any, ...], OpCall] = {}


def make_call(op: str, **params: Any) -> OpCall:
    """Validate one operator's parameters (``ValueError``/``TypeError`` with exact messages).

    Validated calls of the hash operators are memoised (keyed by value *and* type, so ``True``
    never passes for ``1``): the per-call cost of the public API stays a dictionary lookup.
    """
    if op != "bucketize":
        try:
            key = (op, *((k, type(v), v) for k, v in sorted(params.items())))
            hit = _CALLS.get(key)
        except TypeError:  # an unhashable parameter: validate it the slow way (and fail there)
            return _make_call(op, **params)
        if hit is not None:
            return hit
        call = _make_call(op, **params)
        if len(_CALLS) < 4096:
            _CALLS[key] = call
        return call
    return _make_call(op, **params)


def _make_call(op: str, **params: Any) -> OpCall:
    if op in ("xxh32",):
        return OpCall(op, seed=_check_seed(params.get("seed", 0), 32))
    if op == "xxh64":
        return OpCall(op, seed=_check_seed(params.get("seed", 0), 64))
    if op == "hash_bucket":
        nb = _check_int("num_buckets", params["num_buckets"], 1, 1 << 63, "[1, 2**63]")
        method = params.get("method", "mod")
        if not isinstance(method, str):
            raise TypeError(f"method must be a str, got {type(method).__name__}")
        if method not in ("mod", "fastrange"):
            raise ValueError(f"unknown hash_bucket method {method!r}: expected 'mod' or 'fastrange'")
        return OpCall(op, seed=_check_seed(params.get("seed", 0), 64), num_buckets=nb, method=method)
    if op == "fid":
        version = params.get("version", 2)
        if isinstance(version, (bool, np.bool_)) or not isinstance(version, (int, np.integer)):
            raise TypeError(f"version must be an int, got {type(version).__name__}")
        if int(version) not in golden.FID_LAYOUT:
            raise ValueError(f"unknown fid version {version!r}: expected 1 or 2")
        version = int(version)
        slot_bits = golden.FID_LAYOUT[version][0]
        slot = _check_int("slot", params["slot"], 0, (1 << slot_bits) - 1,
                          f"[0, {1 << slot_bits}) for fid version {version}")
        return OpCall(op, seed=_check_seed(params.get("seed", 0), 64), slot=slot, version=int(version))
    if op == "bucketize":
        right = params.get("right", True)
        if not isinstance(right, (bool, np.bool_)):
            raise TypeError(f"right must be a bool, got {type(right).__name__}")
        return OpCall(op, boundaries=check_boundaries(params["boundaries"], params["dtype"]),
                      right=bool(right))
    if op in ("delta_varint_encode", "delta_varint_decode"):
        return OpCall(op)
    raise ValueError(f"unknown operator {op!r}: expected one of {', '.join(OPERATORS)}")


def golden_result(call: OpCall, record: Any) -> Any:
    """The golden model's result for one record (bytes, a number, or a sequence)."""
    op = call.op
    if op == "xxh32":
        return golden.xxh32(record, call.seed)
    if op == "xxh64":
        return golden.xxh64(record, call.seed)
    if op == "hash_bucket":
        return golden.hash_bucket(record, call.num_buckets, call.seed, call.method)
    if op == "fid":
        return golden.fid(record, call.slot, call.version, call.seed)
    if op == "bucketize":
        assert call.boundaries is not None
        return golden.bucketize(record, call.boundaries.tolist(), call.right)
    if op == "delta_varint_encode":
        return golden.delta_varint_encode_seq(record)
    if op == "delta_varint_decode":
        return golden.delta_varint_decode_seq(record)
    raise ValueError(f"unknown operator {op!r}")
