"""The engine wire format (``docs/wire_format.md``): pack batches into 64-bit words and back.

This module is the only place that knows the framing. The Verilator model, the PYNQ DMA buffers
and the SmartNIC service all move exactly these words:

* host side: :func:`encode_request` (batch → registers + table + input words) and
  :func:`decode_response` (output words → results, trailer checked);
* device side (the SmartNIC service, the reference model): :func:`decode_request` and
  :func:`encode_response`;
* :func:`reference_engine`: the engine's documented behaviour, error flags included, written on
  the golden models. Tests hold the hardware and the packers to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from offload.backend import BackendError, Batch, Result
from offload.batch import FixedKeys, Numbers, Sequences, VarChunk, VarRecords
from offload.engine_map import (
    CTRL_SOFT_RESET,
    CTRL_START,
    DEFAULT_SEQ_MAX,
    DTYPE_CODES,
    ENGINE_ID,
    ENGINE_VERSION,
    ERR_FLAGS,
    FORMATS,
    NO_RECORD_MAX,
    OP_CODES,
    PARAM_REGISTERS,
    RECORD_LIMITED,
    REGISTERS,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
    TRAILER_MAGIC,
    err_names,
)
from offload.ops import OpCall, Operator, by_code, golden_result, make_call, result_dtype

__all__ = [
    # the engine map's names the framing uses (defined in offload.engine_map, not here)
    "ENGINE_ID",
    "ENGINE_VERSION",
    "TRAILER_MAGIC",
    "REGISTERS",
    "OP_CODES",
    "FORMATS",
    "ERR_FLAGS",
    "CTRL_START",
    "CTRL_SOFT_RESET",
    "STATUS_BUSY",
    "STATUS_DONE",
    "STATUS_ERROR",
    "DEFAULT_SEQ_MAX",
    "err_names",
    "DTYPES",
    "WireError",
    "WireJob",
    "op_code",
    "encode_request",
    "decode_request",
    "encode_response",
    "decode_response",
    "reference_engine",
    "trailer",
    "parse_trailer",
]

DTYPES = {np.dtype(name): code for name, code in DTYPE_CODES.items()}
_DTYPE_OF = {v: k for k, v in DTYPES.items()}
_MASK32 = np.uint64(0xFFFFFFFF)


class WireError(ValueError):
    """A request or response that does not follow the wire format."""


def op_code(call: OpCall) -> int:
    """The engine op code of a call (its registry entry's :class:`~offload.ops.WireForm`)."""
    wire = call.operator.wire
    if wire is None:
        raise WireError(f"{call.op} has no engine op code (it runs on the host)")
    unbuilt = wire.unbuilt(call.params)
    if unbuilt is not None:
        raise WireError(f"{call.op} with {unbuilt} has no engine op code (it runs on the host)")
    return OP_CODES[wire.key(call.params)]


def _param_registers(call: OpCall) -> dict[str, int]:
    """Every parameter register: 0, then each parameter's value in its registers, low word first."""
    regs = dict.fromkeys(PARAM_REGISTERS, 0)
    for p in call.operator.params:
        given = call.params[p.name]
        value = int(given) if p.registers and given is not None else 0
        for i, name in enumerate(p.registers):
            regs[name] = (value >> (32 * i)) & 0xFFFFFFFF
    return regs


@dataclass
class WireJob:
    """One batch on the wire: register values, the boundary table and the input words."""

    call: OpCall
    regs: dict[str, int]
    table: np.ndarray
    words: np.ndarray
    n: int
    out_words_max: int
    dtype: np.dtype | None = field(default=None)


def trailer(completed: int, err: int = 0) -> int:
    return (TRAILER_MAGIC << 48) | ((err & 0xFFFF) << 32) | (completed & 0xFFFFFFFF)


def parse_trailer(word: int) -> tuple[int, int, int]:
    """``(magic, err, completed)`` of a trailer word."""
    word = int(word)
    return word >> 48, (word >> 32) & 0xFFFF, word & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# compiled packers (numba): variable-length framing is a scatter that numpy does poorly
# ---------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _var_words(offsets: np.ndarray) -> int:
    total = 0
    for i in range(offsets.shape[0] - 1):
        total += 1 + (offsets[i + 1] - offsets[i] + 7) // 8
    return total


@njit(cache=True, nogil=True)
def _pack_var(offsets: np.ndarray, data: np.ndarray, out: np.ndarray, pos: int) -> int:
    """Header word + zero-padded data words per record into ``out`` (bytes view) at word ``pos``."""
    for i in range(offsets.shape[0] - 1):
        a, b = offsets[i], offsets[i + 1]
        length = b - a
        base = pos * 8
        for k in range(8):
            out[base + k] = (length >> (8 * k)) & 0xFF if k < 4 else 0
        base += 8
        for k in range(length):
            out[base + k] = data[a + k]
        padded = (length + 7) // 8 * 8
        for k in range(length, padded):
            out[base + k] = 0
        pos += 1 + padded // 8
    return pos


@njit(cache=True, nogil=True)
def _unpack_var(words: np.ndarray, count: int, max_len: int) -> tuple:
    """Parse VAR framing: returns (status, records, offsets, data_positions).

    status 0 ok, 1 truncated (EARLY_TLAST), 2 bad header, 3 trailing words (MISSING_TLAST).
    """
    offsets = np.zeros(count + 1, np.int64)
    starts = np.zeros(count, np.int64)
    pos: int | np.int64 = 0  # an int64 once compiled (a local annotation is not in the bytecode)
    n = words.shape[0]
    for i in range(count):
        if pos >= n:
            return 1, i, offsets, starts
        h = words[pos]
        if (h >> np.uint64(32)) != 0:
            return 2, i, offsets, starts
        length = np.int64(h & np.uint64(0xFFFFFFFF))
        nw = (length + 7) // 8
        if pos + 1 + nw > n or length > max_len:
            return 1, i, offsets, starts
        starts[i] = (pos + 1) * 8
        offsets[i + 1] = offsets[i] + length
        pos += 1 + nw
    if pos != n:
        return 3, count, offsets, starts
    return 0, count, offsets, starts


@njit(cache=True, nogil=True)
def _gather(src: np.ndarray, starts: np.ndarray, offsets: np.ndarray, k: int) -> np.ndarray:
    out = np.empty(offsets[k], np.uint8)
    for i in range(k):
        a = offsets[i]
        s = starts[i]
        for j in range(offsets[i + 1] - a):
            out[a + j] = src[s + j]
    return out


@njit(cache=True, nogil=True)
def _pack_seq(value_offsets: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
    pos = 0
    for i in range(value_offsets.shape[0] - 1):
        a, b = value_offsets[i], value_offsets[i + 1]
        out[pos] = np.uint64(b - a)
        pos += 1
        for j in range(a, b):
            out[pos] = np.uint64(values[j])
            pos += 1


@njit(cache=True, nogil=True)
def _unpack_seq(words: np.ndarray, count: int) -> tuple:
    vo = np.zeros(count + 1, np.int64)
    pos: int | np.int64 = 0  # an int64 once compiled (a local annotation is not in the bytecode)
    n = words.shape[0]
    for i in range(count):
        if pos >= n:
            return 1, i, vo
        h = words[pos]
        if (h >> np.uint64(32)) != 0:
            return 2, i, vo
        k = np.int64(h)
        if pos + 1 + k > n:
            return 1, i, vo
        vo[i + 1] = vo[i] + k
        pos += 1 + k
    if pos != n:
        return 3, count, vo
    return 0, count, vo


@njit(cache=True, nogil=True)
def _gather_seq(words: np.ndarray, vo: np.ndarray, k: int) -> np.ndarray:
    out = np.empty(vo[k], np.int64)
    pos = 0
    for i in range(k):
        pos += 1
        for j in range(vo[i], vo[i + 1]):
            out[j] = np.int64(words[pos])
            pos += 1
    return out


# ---------------------------------------------------------------------------------------------
# host side
# ---------------------------------------------------------------------------------------------


def _boundary_table(boundaries: np.ndarray) -> np.ndarray:
    dt = boundaries.dtype
    if dt == np.int32:
        return boundaries.astype(np.int64).view(np.uint64)
    if dt == np.float32:
        return boundaries.view(np.uint32).astype(np.uint64)
    return np.ascontiguousarray(boundaries).view(np.uint64).copy()


def _fixed_words(arr: np.ndarray) -> tuple[np.ndarray, int]:
    if arr.dtype.itemsize == 8:
        return np.ascontiguousarray(arr).view(np.uint64), FORMATS["FIXED8"]
    return np.ascontiguousarray(arr).view(np.uint32).astype(np.uint64), FORMATS["FIXED4"]


def encode_request(call: OpCall, batch: Batch) -> WireJob:
    """Pack a validated call and a normalised batch into registers, table and input words."""
    regs = {**_param_registers(call), "OP": op_code(call), "COUNT": batch.n}
    table = np.zeros(0, np.uint64)
    n = batch.n
    if n >= 1 << 32:
        raise WireError(f"a wire batch holds fewer than 2**32 records, got {n}")
    out_max = n + 1
    dtype = None
    kind = call.operator.inputs
    if kind == "numbers":
        if not isinstance(batch, Numbers):
            raise WireError(f"{call.op} takes a numeric batch")
        words, fmt = _fixed_words(batch.values)
        dtype = batch.values.dtype
        regs["DTYPE"] = DTYPES[dtype]
        boundaries = call.params.get("boundaries")
        if boundaries is not None:
            regs["NUM_BOUNDARIES"] = len(boundaries)
            table = _boundary_table(boundaries)
    elif kind == "sequences":
        if not isinstance(batch, Sequences):
            raise WireError(f"{call.op} takes a Sequences batch")
        vo = batch.value_offsets
        nvals = int(vo[-1] - vo[0]) if n else 0
        words = np.empty(n + nvals, np.uint64)
        _pack_seq(vo, batch.values, words)
        fmt = FORMATS["SEQ"]
        lens = np.diff(vo)
        out_max = int(n + ((lens * 10 + 7) // 8).sum() + 1)
    elif isinstance(batch, FixedKeys):
        words, fmt = _fixed_words(batch.keys)
    elif isinstance(batch, VarRecords):
        fmt = FORMATS["VAR"]
        total = sum(_var_words(c.offsets) for c in batch.chunks)
        words = np.empty(total, np.uint64)
        pos = 0
        for c in batch.chunks:
            if int(c.offsets[-1]) - int(c.offsets[0]) and int(np.diff(c.offsets).max()) >= 1 << 32:
                raise WireError("a wire record is shorter than 2**32 bytes")
            pos = _pack_var(c.offsets, c.data, words.view(np.uint8), pos)
    else:
        raise WireError(f"{call.op} cannot take a {type(batch).__name__} batch")
    regs["FORMAT"] = fmt
    return WireJob(call, regs, table, words, n, out_max, dtype)


def _trailer_error(job: WireJob, completed: int, err: int, partial: Result, why: str) -> BackendError:
    return BackendError(
        f"engine reported {why} for {job.call.describe()} after {completed} of {job.n} records "
        f"(flags {err_names(err)})",
        cause="trailer",
        completed=completed,
        partial=partial,
    )


def decode_response(job: WireJob, words: np.ndarray) -> Result:
    """Results of a whole batch from the output words; a short or flagged batch raises
    :class:`BackendError` whose ``partial`` holds the results of the completed records."""
    words = np.asarray(words, dtype=np.uint64)
    op = job.call.op
    if words.shape[0] == 0:
        raise BackendError(
            f"engine returned no words for {job.call.describe()} (no trailer)", cause="framing"
        )
    magic, err, completed = parse_trailer(words[-1])
    if magic != TRAILER_MAGIC:
        raise BackendError(
            f"engine output does not end with a trailer (last word 0x{int(words[-1]):016x})", cause="framing"
        )
    if completed > job.n:
        raise BackendError(
            f"engine trailer claims {completed} records of a {job.n}-record batch", cause="framing"
        )
    body = words[:-1]
    if job.call.operator.result == "encoded":
        res = _decode_encoded(body, completed)
        if res is None:
            raise BackendError("engine output framing does not match its trailer", cause="framing")
        result: Result = res
    else:
        if body.shape[0] != completed:
            raise BackendError(
                f"engine sent {body.shape[0]} result words for {completed} records", cause="framing"
            )
        dt = result_dtype(op)
        if np.dtype(dt).itemsize == 4 and body.shape[0] and int((body >> np.uint64(32)).max()) != 0:
            bad = int(np.flatnonzero(body >> np.uint64(32))[0])
            raise BackendError(
                f"engine result word {bad} has bits above 31 set for {op}",
                cause="framing",
                completed=bad,
                partial=body[:bad].astype(dt),
            )
        result = body.astype(dt) if np.dtype(dt).itemsize == 4 else body.view(dt)
    if err or completed != job.n:
        raise _trailer_error(job, completed, err, result, "an error" if err else "a short batch")
    return result


def _decode_encoded(body: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray] | None:
    status, k, offsets, starts = _unpack_var(body, count, 1 << 32)
    if status != 0 or k != count:
        return None
    return offsets, _gather(body.view(np.uint8), starts, offsets, count)


# ---------------------------------------------------------------------------------------------
# device side
# ---------------------------------------------------------------------------------------------


def call_from_regs(regs: dict[str, int], table: np.ndarray, *, engine: bool = False) -> OpCall:
    """The OpCall a register set describes (the registry entry of its op code, each parameter
    read from its registers); :class:`WireError` when the parameters are bad.

    ``engine=False`` (a service decoding a request) holds the registers to the API's ranges;
    ``engine=True`` (the reference engine) accepts what the engine accepts: an operator whose
    :class:`~offload.ops.WireForm` has an ``engine_error`` check is refused only by it
    (``hash_bucket``: ``NUM_BUCKETS`` 0 for ``mod``, docs/wire_format.md, ``BAD_PARAM``;
    ``fastrange`` with 0 buckets gives 0 and ``mod`` takes any 64-bit divisor).
    """
    code, fmt = regs.get("OP", 0), regs.get("FORMAT", -1)
    hit = by_code(code)
    if hit is None:
        raise WireError(f"unknown OP {code}")
    entry, selected = hit
    assert entry.wire is not None
    params = {
        p.name: p.from_registers(sum(regs.get(r, 0) << (32 * i) for i, r in enumerate(p.registers)))
        for p in entry.params
        if p.registers
    }
    params.update(entry.wire.params_of(selected))
    if entry.inputs == "numbers":
        params.update(_table_params(entry, regs, table, fmt))
    try:
        if engine and entry.wire.engine_error is not None:
            why = entry.wire.engine_error(params)
            if why is not None:
                raise WireError(why)
            call = OpCall(entry.name, **params)
        else:
            call = make_call(entry.name, **params)
    except (ValueError, TypeError) as e:
        if isinstance(e, WireError):
            raise
        raise WireError(f"bad parameters: {e}") from None
    if fmt not in _FORMATS_OF[entry.inputs]:
        raise WireError(f"FORMAT {fmt} is not valid for OP {code}")
    return call


_FORMATS_OF = {
    "records": {FORMATS["FIXED4"], FORMATS["FIXED8"], FORMATS["VAR"]},
    "numbers": {FORMATS["FIXED4"], FORMATS["FIXED8"]},
    "sequences": {FORMATS["SEQ"]},
    "encoded": set(),
}


def _table_params(entry: Operator, regs: dict[str, int], table: np.ndarray, fmt: int) -> dict[str, Any]:
    """A numeric operator's ``dtype`` from DTYPE and, if it takes them, its ``boundaries`` from
    NUM_BOUNDARIES and the table."""
    dtype = _DTYPE_OF.get(regs.get("DTYPE", -1))
    if dtype is None:
        raise WireError(f"bad DTYPE {regs.get('DTYPE')}")
    nb = regs.get("NUM_BOUNDARIES", 0)
    if nb > table.shape[0]:
        raise WireError(f"NUM_BOUNDARIES {nb} exceeds the table of {table.shape[0]}")
    if (fmt == FORMATS["FIXED4"]) != (dtype.itemsize == 4):
        raise WireError(f"FORMAT {fmt} does not fit DTYPE {dtype}")
    if "boundaries" not in {p.name for p in entry.params}:
        return {"dtype": dtype}
    raw = np.ascontiguousarray(table[:nb], dtype=np.uint64)
    return {
        "dtype": dtype,
        "boundaries": raw.astype(np.uint32).view(dtype) if dtype.itemsize == 4 else raw.view(dtype),
    }


def decode_request(regs: dict[str, int], table: np.ndarray, words: np.ndarray) -> tuple[OpCall, Batch]:
    """A device's view of a request: the call and the batch (:class:`WireError` if malformed)."""
    call = call_from_regs(regs, table)
    words = np.ascontiguousarray(words, dtype=np.uint64)
    count = regs.get("COUNT", 0)
    fmt = regs["FORMAT"]
    if fmt in (FORMATS["FIXED8"], FORMATS["FIXED4"]):
        if words.shape[0] != count:
            raise WireError(f"COUNT is {count} but {words.shape[0]} words were sent")
        if call.operator.inputs == "numbers":
            dtype = _DTYPE_OF[regs["DTYPE"]]
            vals = words.astype(np.uint32).view(dtype) if dtype.itemsize == 4 else words.view(dtype)
            return call, Numbers(vals, (count,))
        keys = words if fmt == FORMATS["FIXED8"] else words.astype(np.uint32)
        return call, FixedKeys(keys, (count,))
    if fmt == FORMATS["VAR"]:
        status, k, offsets, starts = _unpack_var(words, count, 1 << 32)
        if status:
            raise WireError(f"VAR framing broken at record {k} ({_STATUS[status]})")
        return call, VarRecords((VarChunk(offsets, _gather(words.view(np.uint8), starts, offsets, count)),))
    status, k, vo = _unpack_seq(words, count)
    if status:
        raise WireError(f"SEQ framing broken at sequence {k} ({_STATUS[status]})")
    return call, Sequences(vo, _gather_seq(words, vo, count))


_STATUS = {1: "truncated", 2: "bad header", 3: "words after the last record"}


def encode_response(call: OpCall, result: Result, completed: int | None = None, err: int = 0) -> np.ndarray:
    """Output words for a result: one word per record (or encoded framing) and the trailer."""
    if call.operator.result == "encoded":
        offsets, data = result
        n = offsets.shape[0] - 1
        completed = n if completed is None else completed
        words = np.empty(_var_words(offsets[: completed + 1]) + 1, np.uint64)
        _pack_var(offsets[: completed + 1], data, words.view(np.uint8), 0)
    else:
        arr = np.asarray(result)
        completed = arr.shape[0] if completed is None else completed
        words = np.empty(completed + 1, np.uint64)
        if arr.dtype.itemsize == 8:
            words[:completed] = arr[:completed].view(np.uint64)
        else:
            words[:completed] = arr[:completed].view(np.uint32)
    words[-1] = trailer(completed, err)
    return words


def reference_engine(
    regs: dict[str, int],
    table: np.ndarray,
    words: np.ndarray,
    *,
    table_depth: int = 256,
    seq_max: int = DEFAULT_SEQ_MAX,
    record_max: int = NO_RECORD_MAX,
) -> tuple[np.ndarray, int]:
    """What the engine does with one batch, flags included: ``(output words, ERR register)``.
    ``record_max``: the engine's ``RECORD_MAX`` (the longest ``VAR`` record of the op codes in
    :data:`~offload.engine_map.RECORD_LIMITED`).

    ``words`` is the whole input transfer; its last word carries ``tlast``. Written on the golden
    models, record by record: slow, for tests and benches.
    """
    words = np.asarray(words, dtype=np.uint64)
    try:
        call = call_from_regs(regs, table, engine=True)
        if regs.get("NUM_BOUNDARIES", 0) > table_depth:
            raise WireError("table too small")
    except WireError:
        err = ERR_FLAGS["BAD_PARAM"] | (ERR_FLAGS["EXTRA_DATA"] if words.shape[0] else 0)
        return np.array([trailer(0, ERR_FLAGS["BAD_PARAM"])], np.uint64), err
    count, fmt = regs.get("COUNT", 0), regs["FORMAT"]
    assert call.operator.wire is not None
    if call.operator.wire.key(call.params) not in RECORD_LIMITED:
        record_max = NO_RECORD_MAX
    out: list[int] = []
    pos, done, err = 0, 0, 0
    n = words.shape[0]
    while done < count:
        if pos >= n:
            err |= ERR_FLAGS["EARLY_TLAST"]
            break
        if fmt in (FORMATS["FIXED8"], FORMATS["FIXED4"]):
            w = int(words[pos])
            pos += 1
            if call.operator.inputs == "numbers":
                dtype = _DTYPE_OF[regs["DTYPE"]]
                raw = np.array(
                    [w & 0xFFFFFFFF if dtype.itemsize == 4 else w],
                    np.uint32 if dtype.itemsize == 4 else np.uint64,
                )
                rec: Any = raw.view(dtype)[0].item()
            else:
                rec = w.to_bytes(8, "little")[: 4 if fmt == FORMATS["FIXED4"] else 8]
            out.append(int(golden_result(call, rec)))
        else:
            h = int(words[pos])
            pos += 1
            if (
                h >> 32
                or (fmt == FORMATS["SEQ"] and h > seq_max)
                or (fmt == FORMATS["VAR"] and h > record_max)
            ):
                err |= ERR_FLAGS["BAD_HEADER"]
                break
            nw = (h + 7) // 8 if fmt == FORMATS["VAR"] else h
            if pos + nw > n:
                err |= ERR_FLAGS["EARLY_TLAST"]
                pos = n  # the cut-off record's words, tlast included, were consumed
                break
            body = words[pos : pos + nw]
            pos += nw
            if fmt == FORMATS["VAR"]:
                out.append(int(golden_result(call, body.tobytes()[:h])))
            else:
                enc = golden_result(call, body.view(np.int64).tolist())
                out.append(len(enc))
                padded = enc + bytes(-len(enc) % 8)
                out.extend(np.frombuffer(padded, np.uint64).tolist())
        done += 1
    if done == count and pos < n:
        err |= ERR_FLAGS["MISSING_TLAST"]
    trailer_err = err
    if pos < n:
        err |= ERR_FLAGS["EXTRA_DATA"]  # what follows the trailer is discarded while idle
    out.append(trailer(done, trailer_err))
    return np.array(out, dtype=np.uint64), err
