"""Jobs on the SmartNIC wire: :mod:`offload.wire` plus the service's host-operator extension.

The engine's wire format has no op code for ``delta_varint_decode`` (it runs on the host). The
service runs it on its own runtime, so the protocol extends the OP register with
:data:`~offload.host.smartnic.protocol.OP_DELTA_VARINT_DECODE` (16): the input is ``VAR`` records
(the encoded bytes of each sequence, exactly as ``offload.wire`` frames byte records) and the
output is ``SEQ`` framing (per record a header word ``K`` and ``K`` int64 words), then the trailer.
Everything else is ``offload.wire`` unchanged.
"""

from __future__ import annotations

import numpy as np

from offload import wire
from offload.backend import Batch, BackendError, Result
from offload.ops import OpCall, make_call

from .protocol import OP_DELTA_VARINT_DECODE

__all__ = ["encode_job", "decode_result", "decode_job", "encode_result"]

_XXH64 = make_call("xxh64")


def encode_job(call: OpCall, batch: Batch) -> wire.WireJob:
    """Host side: the registers, table and input words of one batch."""
    if call.op != "delta_varint_decode":
        return wire.encode_request(call, batch)
    job = wire.encode_request(_XXH64, batch)  # VAR framing of the encoded byte records
    job.regs["OP"] = OP_DELTA_VARINT_DECODE
    job.regs["SEED_LO"] = job.regs["SEED_HI"] = 0
    job.call = call
    # each byte yields at most one value: header + <= nbytes words per record
    job.out_words_max = job.n + int(getattr(batch, "nbytes", 0)) + 1
    return job


def decode_result(job: wire.WireJob, words: np.ndarray) -> Result:
    """Host side: the results from the output words; trailer errors raise BackendError with the
    completed records' results in ``partial``."""
    if job.call.op != "delta_varint_decode":
        return wire.decode_response(job, words)
    words = np.asarray(words, dtype=np.uint64)
    if words.shape[0] == 0:
        raise BackendError("service returned no words (no trailer)", cause="framing")
    magic, err, completed = wire.parse_trailer(words[-1])
    if magic != wire.TRAILER_MAGIC or completed > job.n:
        raise BackendError(f"bad trailer 0x{int(words[-1]):016x}", cause="framing")
    body = words[:-1]
    status, k, vo = wire._unpack_seq(body, completed)
    if status != 0 or k != completed:
        raise BackendError("service output framing does not match its trailer", cause="framing")
    result = (vo, wire._gather_seq(body, vo, completed))
    if err or completed != job.n:
        raise BackendError(f"service completed {completed} of {job.n} records "
                           f"(flags {wire.err_names(err)})", cause="trailer", completed=completed,
                           partial=result)
    return result


def decode_job(regs: dict[str, int], table: np.ndarray, words: np.ndarray) -> tuple[OpCall, Batch]:
    """Service side: the call and batch of a request (:class:`offload.wire.WireError` if bad)."""
    if "FORMAT" not in regs or "OP" not in regs:
        raise wire.WireError("a request needs the OP and FORMAT registers")
    count = regs.get("COUNT", 0)
    if count > words.shape[0]:  # every record takes at least one word
        raise wire.WireError(f"COUNT is {count} but only {words.shape[0]} words were sent")
    if regs["OP"] == OP_DELTA_VARINT_DECODE:
        if regs["FORMAT"] != wire.FORMATS["VAR"]:
            raise wire.WireError("delta_varint_decode takes VAR records")
        _, batch = wire.decode_request(dict(regs, OP=2), table, words)
        return make_call("delta_varint_decode"), batch
    return wire.decode_request(regs, table, words)


def encode_result(call: OpCall, result: Result) -> list[np.ndarray]:
    """Service side: output words + trailer, as buffers to send one after the other (8-byte
    results are sent in place, without the copy ``wire.encode_response`` makes)."""
    if call.op != "delta_varint_decode":
        if isinstance(result, np.ndarray) and result.dtype.itemsize == 8 and result.ndim == 1:
            n = result.shape[0]
            return [np.ascontiguousarray(result).view(np.uint64),
                    np.array([wire.trailer(n, 0)], np.uint64)]
        return [wire.encode_response(call, result)]
    vo, values = result  # type: ignore[misc]
    vo = np.ascontiguousarray(vo, dtype=np.int64)
    n = vo.shape[0] - 1
    if n and int(vo[0]) != 0:
        values = values[int(vo[0]):]
        vo = vo - vo[0]
    nvals = int(vo[-1]) if n else 0
    out = np.empty(n + nvals + 1, np.uint64)
    wire._pack_seq(vo, np.ascontiguousarray(values, dtype=np.int64), out[:-1])
    out[-1] = wire.trailer(n, 0)
    return [out]
