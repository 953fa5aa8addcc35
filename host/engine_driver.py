"""The engine driver the ``sim`` and ``fpga`` backends share: one engine behind a transport.

The engine's host interface (``docs/wire_format.md``) is 32-bit registers and one stream transfer
per batch. A backend supplies a :class:`Transport`, which moves register accesses and stream words
and nothing else: the Verilator model for ``sim`` (``host/sim_backend.py``), PYNQ MMIO and the AXI
DMA for ``fpga`` (``host/fpga.py``). :class:`EngineDriver` does everything the engine map and the
wire format define, once for both:

* :meth:`~EngineDriver.open`: read and check ``ID``, ``VERSION``, ``CAPS``, ``OPS`` and
  ``SEQ_MAX`` into an :class:`EngineInfo`; :meth:`~EngineDriver.supports` answers from it;
* :func:`program_engine`: the parameter registers in the engine map's order, the boundary table,
  then ``CTRL.START``;
* :meth:`~EngineDriver.run`: a batch in chunks of whole records (halved while a chunk's transfer
  is longer than the transport carries), each packed by :func:`offload.wire.encode_request` and
  unpacked by :func:`offload.wire.decode_response`, the parts joined in order. Chunk k+1 is packed
  and loaded while chunk k is in flight, and chunk k is unpacked while chunk k+1 is in flight;
* a failure raises :class:`~offload.backend.BackendError` whose ``completed``/``partial`` are
  exact for the whole batch (:class:`ChunkResults`): every chunk before the failing one, plus the
  records the failing chunk's own trailer vouches for. A transfer left unfinished is aborted and
  the engine soft-reset (:meth:`Transport.abort`, :func:`soft_reset`); a device that is gone
  (:class:`DeviceLost`, or ``OSError`` from a register access) is not touched again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from offload import wire
from offload.backend import BackendError, Batch, Capabilities, Result, concat_results, empty_result
from offload.batch import Sequences, VarRecords
from offload.engine_map import (
    CTRL_SOFT_RESET,
    CTRL_START,
    DEFAULT_SEQ_MAX,
    ENGINE_ID,
    ENGINE_VERSION,
    NO_RECORD_MAX,
    PARAM_REGISTERS,
    RECORD_LIMITED,
    REGISTERS,
)
from offload.ops import OpCall, by_code

__all__ = [
    "Chunk",
    "Transport",
    "EngineInfo",
    "EngineDriver",
    "ChunkResults",
    "DeviceLost",
    "program_engine",
    "soft_reset",
    "read_info",
    "supports_on_engine",
]

#: What the engine's batch kinds are on the wire: every one but pre-encoded input.
_BATCH_KINDS = frozenset({"fixed", "var", "numbers", "sequences"})


@dataclass(frozen=True)
class Chunk:
    """One transfer: records ``[start, stop)`` of the backend's batch, packed as ``job``."""

    start: int
    stop: int
    job: wire.WireJob


class Transport(Protocol):
    """How a backend reaches its engine: registers, and one stream transfer at a time.

    The driver calls, per chunk: :meth:`load` (possibly while the previous chunk is still in
    flight), then programs the engine through :meth:`write`, then :meth:`start`, and later
    :meth:`collect`. A transport that moves words synchronously does the whole transfer in
    :meth:`collect`.
    """

    @property
    def max_words(self) -> int | None:
        """The longest transfer, in 64-bit words either way; ``None``: no limit."""
        ...

    @property
    def link(self) -> str:
        """What the transport moves words over, for messages (``"DMA"``)."""
        ...

    @property
    def where(self) -> str:
        """The device, for messages (``"simulated PYNQ-Z2"``)."""
        ...

    def read(self, addr: int) -> int:
        """The 32-bit register at byte address ``addr``."""
        ...

    def write(self, addr: int, value: int) -> None:
        """Write a 32-bit register."""
        ...

    def load(self, chunk: Chunk) -> None:
        """Put the chunk's input words where the device will read them from."""
        ...

    def start(self, chunk: Chunk) -> None:
        """Begin moving the loaded chunk's words through the (programmed, started) engine."""
        ...

    def collect(self, chunk: Chunk) -> np.ndarray:
        """The started chunk's output words (uint64; a copy the transport no longer touches).

        Raises :class:`~offload.backend.BackendError` when the transfer fails or misses its
        deadline; the driver then calls :meth:`abort`."""
        ...

    def abort(self) -> None:
        """Stop a transfer that did not complete and soft-reset the engine (:func:`soft_reset`),
        in the order the link needs, leaving link and engine idle for the next chunk."""
        ...


class DeviceLost(BackendError):
    """The device is gone (unplugged, its registers fail): nothing more is tried on it.
    ``reason`` is the message without the backend's name."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"{backend}: {reason}", cause="device_lost")
        self.reason = reason


@dataclass(frozen=True)
class EngineInfo:
    """What an engine reports about itself in its read-only registers."""

    caps: Capabilities
    ops_mask: int
    seq_max: int
    version: int
    record_max: int = NO_RECORD_MAX  # the longest VAR record of the RECORD_LIMITED op codes


def program_engine(write: Callable[[int, int], None], job: wire.WireJob) -> None:
    """Write a job's parameters and boundary table through ``write(addr, value)``, then START."""
    for name in PARAM_REGISTERS:
        write(REGISTERS[name], job.regs.get(name, 0))
    if job.table.shape[0]:
        write(REGISTERS["TABLE_ADDR"], 0)
        for v in job.table.tolist():
            write(REGISTERS["TABLE_DATA_LO"], v & 0xFFFFFFFF)
            write(REGISTERS["TABLE_DATA_HI"], v >> 32)
    write(REGISTERS["CTRL"], CTRL_START)


def soft_reset(write: Callable[[int, int], None]) -> None:
    """``CTRL.SOFT_RESET``: the engine aborts its batch, clears its flags and its data path."""
    write(REGISTERS["CTRL"], CTRL_SOFT_RESET)


def read_info(read: Callable[[int], int], name: str) -> EngineInfo:
    """Read and check the engine's ID, VERSION, CAPS, OPS, SEQ_MAX and RECORD_MAX registers."""
    ident = read(REGISTERS["ID"])
    if ident != ENGINE_ID:
        raise BackendError(
            f"{name}: engine ID register reads 0x{ident:08x}, expected 0x{ENGINE_ID:08x}", cause="device"
        )
    caps, ops = read(REGISTERS["CAPS"]), read(REGISTERS["OPS"])
    version = read(REGISTERS["VERSION"])
    if version >> 16 != ENGINE_VERSION >> 16:
        raise BackendError(
            f"{name}: engine wire format {version >> 16}.{version & 0xFFFF} is not "
            f"compatible with the host's {ENGINE_VERSION >> 16}."
            f"{ENGINE_VERSION & 0xFFFF}",
            cause="device",
        )
    # SEQ_MAX came with wire format 1.1; an older engine encodes the default
    seq_max = read(REGISTERS["SEQ_MAX"]) if version >= 0x00010001 else DEFAULT_SEQ_MAX
    # RECORD_MAX and OPS_HI came with 1.2 (and the only op codes they describe)
    record_max = read(REGISTERS["RECORD_MAX"]) if version >= 0x00010002 else NO_RECORD_MAX
    if version >= 0x00010002:
        ops |= read(REGISTERS["OPS_HI"]) << 32
    names = {hit[0].name for code in range(64) if ops >> code & 1 and (hit := by_code(code))}
    return EngineInfo(
        Capabilities(
            ops=frozenset(names),
            max_boundaries=caps & 0xFFFF,
            max_record_bytes=(1 << 32) - 1,
            batch_kinds=_BATCH_KINDS,
        ),
        ops,
        seq_max,
        version,
        record_max,
    )


def supports_on_engine(info: EngineInfo, call: OpCall, batch: Batch) -> str | None:
    """Why the engine described by ``info`` cannot run ``call`` on ``batch`` (``None``: it can),
    beyond the backend's capabilities: its op code is built in, its sequences and records fit."""
    try:
        code = wire.op_code(call)
    except wire.WireError as e:
        return str(e)
    if not info.ops_mask >> code & 1:
        return f"the engine is built without op {code} ({call.describe()})"
    if isinstance(batch, Sequences) and batch.n:
        longest = int(np.diff(batch.value_offsets).max())
        if longest > info.seq_max:
            return f"a sequence has {longest} values, the engine encodes at most {info.seq_max}"
    if isinstance(batch, VarRecords) and batch.n:
        longest = max(int(np.diff(c.offsets).max()) for c in batch.chunks if c.n)
        if longest >= 1 << 32:
            return f"a record has {longest} bytes, the wire format carries fewer than 2**32"
        assert call.operator.wire is not None
        if longest > info.record_max and call.operator.wire.key(call.params) in RECORD_LIMITED:
            return f"a record has {longest} bytes, the engine's {call.op} takes at most {info.record_max}"
    return None


class ChunkResults:
    """The results of a batch's leading chunks, in order, and what a failure hands back."""

    def __init__(self, op: str) -> None:
        self.op = op
        self.parts: list[Result] = []
        self.completed = 0  # records [0, completed) have results in parts

    def add(self, chunk: Chunk, result: Result) -> None:
        assert chunk.start == self.completed, "chunks complete in order"
        self.parts.append(result)
        self.completed = chunk.stop

    def result(self) -> Result:
        return concat_results(self.op, self.parts)

    def failure(self, e: BackendError) -> BackendError:
        """``e`` (the failing chunk's error) restated for the whole batch: ``completed`` and
        ``partial`` are the chunks before it plus the records its own ``partial`` vouches for."""
        vouched = e.completed if e.partial is not None else 0
        parts = list(self.parts)
        if vouched and e.partial is not None:
            parts.append(e.partial)
        return BackendError(
            str(e),
            cause=e.cause,
            completed=self.completed + vouched,
            partial=concat_results(self.op, parts) if parts else None,
        )


class EngineDriver:
    """One engine behind ``transport``, for the backend called ``name`` (message prefix)."""

    def __init__(self, transport: Transport, name: str) -> None:
        self.transport = transport
        self.name = name
        self.info: EngineInfo | None = None
        self.lost: str | None = None  # why the device is gone (set by a DeviceLost)
        self._inflight: Chunk | None = None

    def open(self) -> EngineInfo:
        """The engine's identity and capabilities, read and checked once; then the engine is
        soft-reset (its last user may have left it mid-batch)."""
        if self.info is None:
            info = read_info(self.transport.read, self.name)
            soft_reset(self.transport.write)
            self.info = info
        return self.info

    def supports(self, call: OpCall, batch: Batch) -> str | None:
        return supports_on_engine(self.open(), call, batch)

    def chunks(self, call: OpCall, batch: Batch, size: int) -> Iterator[Chunk]:
        """Chunks of at most ``size`` whole records, packed; a chunk whose transfer is longer
        than the transport's ``max_words`` is halved (and so are the chunks after it)."""
        limit = self.transport.max_words
        a, n = 0, batch.n
        while a < n:
            b = min(a + size, n)
            job = wire.encode_request(call, batch if (a, b) == (0, n) else batch.slice(a, b))
            words = max(job.words.shape[0], job.out_words_max)
            if limit is not None and words > limit:
                if b - a == 1:
                    raise BackendError(
                        f"{self.name}: record {a} needs a transfer of {words * 8} "
                        f"bytes, more than the {self.transport.link}'s {limit * 8}",
                        cause="too_large",
                    )
                size = max(1, (b - a) // 2)
                continue
            yield Chunk(a, b, job)
            a = b

    def run(self, call: OpCall, batch: Batch, chunk_records: int) -> Result:
        """The whole batch's results; :class:`BackendError` with exact ``completed``/``partial``."""
        if batch.n == 0:
            return empty_result(call.op)
        done = ChunkResults(call.op)
        self._inflight = None  # started and not collected: aborted on a failure
        try:
            self._pipeline(self.chunks(call, batch, chunk_records), done)
            return done.result()
        except OSError as e:  # a register access failed: the device went away
            raise done.failure(self._gone(DeviceLost(self.name, f"{self.transport.where} lost: {e}"))) from e
        except DeviceLost as e:
            raise done.failure(self._gone(e)) from e
        except BackendError as e:
            if self._inflight is not None:
                self.abort()
            raise done.failure(e) from e

    def _pipeline(self, chunks: Iterator[Chunk], done: ChunkResults) -> None:
        """Each chunk through the engine, in order: chunk k+1 is packed and loaded while chunk k
        is in flight, and chunk k is unpacked while chunk k+1 is in flight."""
        first = next(chunks)
        self.transport.load(first)
        self._start(first)
        cur: Chunk | None = first
        while cur is not None:
            nxt = next(chunks, None)
            if nxt is not None:
                self.transport.load(nxt)
            out = self.transport.collect(cur)
            try:
                if nxt is not None:
                    self._start(nxt)
            finally:  # cur's results count even when nxt fails to start
                self._inflight = nxt
                done.add(cur, wire.decode_response(cur.job, out))
            cur = nxt

    def _start(self, chunk: Chunk) -> None:
        self._inflight = chunk
        program_engine(self.transport.write, chunk.job)
        self.transport.start(chunk)

    def abort(self) -> None:
        """Stop the transfer in flight and soft-reset the engine (the device may be gone)."""
        try:
            self.transport.abort()
        except OSError as e:
            self._gone(DeviceLost(self.name, f"{self.transport.where} lost: {e}"))
        except DeviceLost as e:
            self._gone(e)

    def _gone(self, e: DeviceLost) -> DeviceLost:
        self.lost = e.reason
        return e
