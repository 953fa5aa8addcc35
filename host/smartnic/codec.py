"""REQUEST and RESULT bodies of protocol version 2: a call and its batch in their own buffers.

A REQUEST's meta is compact JSON naming the operator, its validated parameters and the batch
layout; its payload is the batch's arrays (and any array parameter, e.g. bucketize's boundaries)
one after the other, each padded with zeros to a whole number of 8-byte words::

    {"op": "bucketize", "params": {"dtype": {"dtype": "<f8"}, "boundaries": {"buf": 0},
     "right": true}, "batch": "numbers", "bufs": [["<f8", 3], ["<f8", 1000]], "deadline_ms": 40}

Batch layouts (the forms of :mod:`offload.batch`): ``fixed`` (the keys, ``<u4`` or ``<u8``),
``var`` (int64 offsets from 0, then the bytes), ``numbers`` (the values), ``sequences`` (int64
value offsets from 0, then the int64 values). The service rebuilds the call with
:func:`offload.ops.make_call` (so a bad parameter gets the registry's exact message) and the batch
with :mod:`offload.batch`'s public constructors, as views of the received payload (no copy).

A RESULT carries the result's arrays the same way: one array, or ``(offsets, data)`` /
``(value_offsets, values)`` with offsets from 0. Nothing here names an operator: any registered
operator travels as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from offload.backend import BackendError, Batch, Result
from offload.batch import (
    FixedKeys,
    Numbers,
    Sequences,
    VarRecords,
    as_encoded,
    as_numbers,
    as_records,
    as_sequences,
)
from offload.ops import OpCall, make_call, operator

__all__ = [
    "RequestError",
    "Buffers",
    "batch_arrays",
    "request_arrays",
    "request_body",
    "parse_request",
    "result_body",
    "parse_result",
    "padded",
    "body_bytes",
    "result_bound",
    "LAYOUTS",
]

#: The batch layouts an operator's input kind travels in.
LAYOUTS: Mapping[str, tuple[str, ...]] = {
    "records": ("fixed", "var"),
    "numbers": ("numbers",),
    "sequences": ("sequences",),
    "encoded": ("var",),
}
# the element types a buffer may have: little-endian bools, integers and floats of up to 8 bytes
# (never object arrays: a buffer is only ever a view of received bytes)
_DTYPES = frozenset(np.dtype(c).newbyteorder("<").str for c in "?bBhHiIqQefd")
_PAD = [b"", b"\0" * 7, b"\0" * 6, b"\0" * 5, b"\0" * 4, b"\0" * 3, b"\0" * 2, b"\0"]

#: A body's buffers: numpy arrays, each followed by its zero padding (bytes) when not whole words.
Buffers = list[Any]


class RequestError(ValueError):
    """A REQUEST body that does not follow this format (answered as ``BAD_REQUEST``)."""


def padded(nbytes: int) -> int:
    """``nbytes`` rounded up to whole 8-byte words."""
    return (nbytes + 7) & ~7


def body_bytes(arrays: list[np.ndarray]) -> int:
    """The payload bytes of these arrays, each padded to whole words."""
    return sum(padded(a.nbytes) for a in arrays)


def _payload(arrays: list[np.ndarray]) -> Buffers:
    out: Buffers = []
    for a in arrays:
        out.append(a)
        if a.nbytes % 8:
            out.append(_PAD[a.nbytes % 8])
    return out


def _describe_json(arrays: list[np.ndarray]) -> bytes:
    """``[[dtype, count], ...]`` of ``arrays`` as JSON, formatted by hand (dtype strings need no
    escaping): this is on every request's and result's path."""
    return b"[" + b",".join(b'["%s",%d]' % (a.dtype.str.encode(), a.shape[0]) for a in arrays) + b"]"


# ---------------------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------------------


def batch_arrays(batch: Batch) -> tuple[str, list[np.ndarray]]:
    """A batch's layout name and its arrays (offsets rebased to 0; copies only what must be)."""
    if isinstance(batch, FixedKeys):
        return "fixed", [batch.keys]
    if isinstance(batch, VarRecords):
        return "var", list(batch.contiguous())
    if isinstance(batch, Numbers):
        return "numbers", [batch.values]
    if isinstance(batch, Sequences):
        vo, values = batch.value_offsets, batch.values
        lo, hi = int(vo[0]), int(vo[-1])
        if lo:
            vo = vo - lo
        return "sequences", [np.ascontiguousarray(vo, np.int64), values[lo:hi]]
    raise TypeError(f"unsupported batch type {type(batch).__name__}")


def _param_json(name: str, value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays.append(np.ascontiguousarray(value).reshape(-1))
        return {"buf": len(arrays) - 1}
    if isinstance(value, np.dtype):
        return {"dtype": value.str}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"parameter {name!r} of type {type(value).__name__} cannot be sent to the "
        "SmartNIC service (JSON scalars, numpy dtypes and 1-D arrays can)"
    )


# a call's ``"op"`` and ``"params"`` JSON, by call (calls without array parameters: the others
# are not memoised by the registry either)
_CALL_JSON: dict[OpCall, bytes] = {}


def _call_json(call: OpCall, arrays: list[np.ndarray]) -> bytes:
    """``{"op": ..., "params": ...}`` of ``call``; its array parameters are appended to
    ``arrays`` (such a call is not cached: its JSON names their positions)."""
    hit = _CALL_JSON.get(call)
    if hit is not None:
        return hit
    params = {k: _param_json(k, v, arrays) for k, v in call.params.items()}
    text = json.dumps({"op": call.op, "params": params}, separators=(",", ":")).encode()
    if not arrays:
        if len(_CALL_JSON) >= 1024:
            _CALL_JSON.clear()
        _CALL_JSON[call] = text
    return text


def request_arrays(call: OpCall, batch: Batch) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A REQUEST's meta fields (``call``: the op and params JSON; ``batch``: the layout) and its
    arrays: array parameters, then the batch's."""
    arrays: list[np.ndarray] = []
    call_json = _call_json(call, arrays)
    layout, batch_bufs = batch_arrays(batch)
    arrays += batch_bufs
    return {"call": call_json, "batch": layout}, arrays


def request_body(
    meta: dict[str, Any], arrays: list[np.ndarray], deadline_ms: int = 0
) -> tuple[bytes, Buffers]:
    """The REQUEST meta bytes and payload buffers of :func:`request_arrays`' output."""
    text = b'%s,"batch":"%s","bufs":%s,"deadline_ms":%d}' % (
        meta["call"][:-1],
        meta["batch"].encode(),
        _describe_json(arrays),
        int(deadline_ms),
    )
    return text, _payload(arrays)


def _json(meta: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(meta)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RequestError(f"bad JSON meta: {e}") from None
    if not isinstance(obj, dict):
        raise RequestError("JSON meta is not an object")
    return obj


def _views(spec: Any, payload: np.ndarray) -> list[np.ndarray]:
    """The arrays ``spec`` (``[[dtype, count], ...]``) names, as views of ``payload``."""
    if not isinstance(spec, list):
        raise RequestError("bufs must be a list of [dtype, count]")
    views, pos, total = [], 0, payload.shape[0]
    for item in spec:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and item[0] in _DTYPES
            and type(item[1]) is int
            and item[1] >= 0
        ):
            raise RequestError(
                f"bad buffer {item!r}: expected [dtype, count] with dtype one of {', '.join(sorted(_DTYPES))}"
            )
        dt = np.dtype(item[0])
        nbytes = dt.itemsize * item[1]
        if pos + padded(nbytes) > total:
            raise RequestError(f"buffers need more than the payload's {total} bytes")
        views.append(payload[pos : pos + nbytes].view(dt))
        pos += padded(nbytes)
    if pos != total:
        raise RequestError(f"buffers take {pos} bytes of a payload of {total}")
    return views


def _param_value(name: str, value: Any, views: list[np.ndarray], used: set[int]) -> Any:
    if not isinstance(value, dict):
        return value
    if list(value) == ["dtype"]:
        if not isinstance(value["dtype"], str) or value["dtype"] not in _DTYPES:
            raise RequestError(f"parameter {name!r}: bad dtype {value['dtype']!r}")
        return np.dtype(value["dtype"])
    i = value.get("buf") if list(value) == ["buf"] else None
    if type(i) is not int or not 0 <= i < len(views) or i in used:
        raise RequestError(f"parameter {name!r}: bad value {value!r}")
    used.add(i)
    return views[i]


def _batch(kind: str, layout: Any, arrays: list[np.ndarray]) -> Batch:
    """The batch of ``layout`` over ``arrays`` (offload.batch's checks and exact messages)."""
    if layout not in LAYOUTS[kind]:
        raise RequestError(f"a {kind} operator takes the layout {' or '.join(LAYOUTS[kind])}, got {layout!r}")
    want = 1 if layout in ("fixed", "numbers") else 2
    if len(arrays) != want:
        raise RequestError(f"the {layout} layout has {want} buffer(s), got {len(arrays)}")
    if layout == "fixed":
        keys = arrays[0]
        if keys.dtype.str not in ("<u4", "<u8"):
            raise RequestError(f"fixed keys are <u4 or <u8, got {keys.dtype.str}")
        return FixedKeys(keys, keys.shape)  # already what as_records makes of them
    if layout == "numbers":
        return as_numbers(arrays[0])
    if layout == "sequences":
        return as_sequences((arrays[0], arrays[1]))
    return as_encoded(*arrays) if kind == "encoded" else as_records((arrays[0], arrays[1]))


def parse_request(meta: bytes, payload: np.ndarray) -> tuple[OpCall, Batch, int]:
    """``(call, batch, deadline_ms)`` of a REQUEST body. A malformed body raises
    :class:`RequestError`; a parameter or batch the registry or :mod:`offload.batch` refuses
    raises their exact ``TypeError``/``ValueError``."""
    m = _json(meta)
    op, params, layout = m.get("op"), m.get("params"), m.get("batch")
    if not isinstance(op, str) or not isinstance(params, dict):
        raise RequestError("a request names op (a string) and params (an object)")
    entry = operator(op)  # ValueError naming the known operators
    views = _views(m.get("bufs"), payload)
    used: set[int] = set()
    values = {k: _param_value(k, v, views, used) for k, v in params.items()}
    if used != set(range(len(used))):
        raise RequestError("array parameters take the first buffers, in order")
    call = make_call(op, **values)
    batch = _batch(entry.inputs, layout, views[len(used) :])
    deadline = m.get("deadline_ms", 0)
    return call, batch, deadline if type(deadline) is int else 0


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


def result_arrays(result: Result) -> list[np.ndarray]:
    """A result's arrays as sent: one array, or a pair with its offsets rebased to 0."""
    if isinstance(result, np.ndarray):
        return [np.ascontiguousarray(result).reshape(-1)]
    offsets, data = result
    lo, hi = int(offsets[0]), int(offsets[-1])
    if lo:
        offsets = offsets - lo
    return [np.ascontiguousarray(offsets, np.int64), np.ascontiguousarray(data[lo:hi])]


def result_body(result: Result) -> tuple[bytes, Buffers]:
    """The ``"bufs"`` JSON fragment of a RESULT's meta and its payload buffers (in place)."""
    arrays = result_arrays(result)
    return _describe_json(arrays), _payload(arrays)


def expected_bufs(call: OpCall, n: int) -> list[str] | None:
    """The dtypes of ``call``'s result buffers for ``n`` records; the count is checked for a
    one-array result (None for a pair: its data length follows from its offsets)."""
    entry = call.operator
    dt = entry.result_dtype
    if dt is not None:
        return [dt.str]
    return ["<i8", "|u1" if entry.result == "encoded" else "<i8"]


def result_bound(call: OpCall, n: int, request_bytes: int) -> int:
    """The largest RESULT payload accepted for ``n`` records sent in ``request_bytes``: exact for
    a one-value-per-record result; for a pair, the offsets plus 8 result bytes per request byte
    (delta_varint_decode: at most one int64 per encoded byte)."""
    dt = call.operator.result_dtype
    if dt is not None:
        return padded(dt.itemsize * n)
    return 8 * (n + 2) + 8 * request_bytes


def _framing(message: str) -> BackendError:
    return BackendError(f"service result: {message}", cause="framing")


def parse_result(call: OpCall, n: int, meta: dict[str, Any], payload: np.ndarray) -> Result:
    """The result of ``n`` records from a RESULT's meta and payload (views, no copy). A result
    that does not fit the call raises :class:`BackendError` (cause ``framing``)."""
    try:
        arrays = _views(meta.get("bufs"), payload)
    except RequestError as e:
        raise _framing(str(e)) from None
    want = expected_bufs(call, n)
    got = [a.dtype.str for a in arrays]
    if got != want:
        raise _framing(f"buffers {got} where {call.op} returns {want}")
    if len(arrays) == 1:
        if arrays[0].shape[0] != n:
            raise _framing(f"{arrays[0].shape[0]} results for {n} records")
        return arrays[0]
    offsets, data = arrays
    if (
        offsets.shape[0] != n + 1
        or int(offsets[0]) != 0
        or int(offsets[-1]) != data.shape[0]
        or (n > 1 and bool((offsets[1:] < offsets[:-1]).any()))
    ):
        raise _framing(f"offsets do not frame {n} records of {data.shape[0]} elements")
    return offsets, data


def check_sunk(call: OpCall, n: int, meta: dict[str, Any]) -> None:
    """A one-array RESULT received straight into the caller's array: its meta must say so."""
    want = [[expected_bufs(call, n)[0], n]]  # type: ignore[index]
    if meta.get("bufs") != want:
        raise _framing(f"buffers {meta.get('bufs')!r} where {call.op} returns {want}")
