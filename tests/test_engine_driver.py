"""The engine driver (``offload.host.engine_driver``) against a small fake transport.

The fake is the pure-Python engine (``offload.sim.refmodel``, i.e. ``offload.wire.reference_engine``)
behind a transport that can fail one chosen chunk in each way a device fails. The chunk loop's
partial results are exact: a failure in chunk k gives ``completed`` = the records of the chunks
before it + the records chunk k's own trailer vouches for, and ``partial`` = their golden results.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from offload import engine_map, wire
from offload.backend import BackendError
from offload.batch import as_numbers, as_records, as_sequences
from offload.engine_map import (
    CTRL_SOFT_RESET,
    CTRL_START,
    DEFAULT_SEQ_MAX,
    ENGINE_ID,
    ENGINE_VERSION,
    NO_RECORD_MAX,
    PARAM_REGISTERS,
    REGISTERS,
)
from offload.host.engine_driver import (
    Chunk,
    ChunkResults,
    DeviceLost,
    EngineDriver,
    program_engine,
    read_info,
    supports_on_engine,
)
from offload.ops import make_call
from offload.sim.refmodel import ReferenceEngineModel
from tests.conftest import golden

N, CHUNK = 40, 8  # five chunks
CHUNKS = N // CHUNK
KEYS = as_records(np.arange(N, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
XXH64 = make_call("xxh64", seed=3)
EXPECTED = golden(XXH64, KEYS)
VOUCHED = 3  # records of the failing chunk its trailer vouches for ("early_tlast")


class FakeTransport:
    """The reference engine behind a transport; ``fail`` = (chunk index, how) fails one chunk.

    How: ``"timeout"`` (collect raises), ``"no_trailer"`` (the last 3 words are lost),
    ``"early_tlast"`` (only the first 3 records' words are sent: the engine's trailer vouches for
    them), ``"oserror"``/``"lost"`` (the device goes away at the chunk's start or collect).
    """

    link = "FIFO"
    where = "the fake device"

    def __init__(
        self, fail: tuple[int, str] | None = None, max_words: int | None = None, engine: Any = None
    ) -> None:
        self.engine = engine or ReferenceEngineModel()
        self.fail = fail
        self.max_words = max_words
        self.log: list[tuple[str, int]] = []
        self.writes: list[tuple[int, int]] = []

    def read(self, addr: int) -> int:
        return self.engine.read(addr)

    def write(self, addr: int, value: int) -> None:
        self.writes.append((addr, value))
        self.engine.write(addr, value)

    def _failing(self, chunk: Chunk, how: str) -> bool:
        return self.fail == (chunk.start // CHUNK, how)

    def load(self, chunk: Chunk) -> None:
        self.log.append(("load", chunk.start))

    def start(self, chunk: Chunk) -> None:
        self.log.append(("start", chunk.start))
        if self._failing(chunk, "oserror"):
            raise OSError(19, "gone")

    def collect(self, chunk: Chunk) -> np.ndarray:
        self.log.append(("collect", chunk.start))
        if self._failing(chunk, "timeout"):
            raise BackendError("fake: timed out", cause="timeout")
        if self._failing(chunk, "lost"):
            raise DeviceLost("fake", "the fake device vanished")
        words = chunk.job.words
        if self._failing(chunk, "early_tlast"):
            words = words[: _prefix_words(chunk.job, VOUCHED)]
        out, status, _, _ = self.engine.stream(words, chunk.job.out_words_max)
        assert status == 0
        return out[:-3] if self._failing(chunk, "no_trailer") else out

    def abort(self) -> None:
        self.log.append(("abort", -1))
        self.engine.write(REGISTERS["CTRL"], CTRL_SOFT_RESET)


def _prefix_words(job: wire.WireJob, m: int) -> int:
    """The input words of a job's first ``m`` records."""
    fmt = job.regs["FORMAT"]
    if fmt in (wire.FORMATS["FIXED8"], wire.FORMATS["FIXED4"]):
        return m
    pos = 0
    for _ in range(m):
        h = int(job.words[pos])
        pos += 1 + (h if fmt == wire.FORMATS["SEQ"] else (h + 7) // 8)
    return pos


def run(transport: FakeTransport, call=XXH64, batch=KEYS, chunk=CHUNK):
    return EngineDriver(transport, "fake").run(call, batch, chunk)


# -- the whole batch -------------------------------------------------------------------------------


def test_chunks_in_order_equal_the_golden_model():
    t = FakeTransport()
    assert run(t).tolist() == EXPECTED
    starts = [a for a, b in t.log if a == "start"]
    assert len(starts) == CHUNKS


def test_chunk_k_plus_1_is_loaded_while_k_is_in_flight_and_started_after_it():
    t = FakeTransport()
    run(t)
    for k in range(CHUNKS - 1):
        a, b = k * CHUNK, (k + 1) * CHUNK
        assert (
            t.log.index(("start", a))
            < t.log.index(("load", b))
            < t.log.index(("collect", a))
            < t.log.index(("start", b))
        )


def test_an_empty_batch_moves_nothing():
    t = FakeTransport()
    assert run(t, batch=as_records(np.zeros(0, np.uint64))).tolist() == []
    assert t.log == [] and t.writes == []


def test_program_writes_the_parameters_in_order_then_the_table_then_start():
    t = FakeTransport()
    call = make_call("bucketize", boundaries=np.array([1, 1 << 40], np.int64), dtype=np.dtype(np.int64))
    job = wire.encode_request(call, as_numbers(np.array([0, 5], np.int64)))
    program_engine(t.write, job)
    R = REGISTERS
    assert t.writes == (
        [(R[name], job.regs.get(name, 0)) for name in PARAM_REGISTERS]
        + [
            (R["TABLE_ADDR"], 0),
            (R["TABLE_DATA_LO"], 1),
            (R["TABLE_DATA_HI"], 0),
            (R["TABLE_DATA_LO"], 0),
            (R["TABLE_DATA_HI"], 1 << 8),
            (R["CTRL"], CTRL_START),
        ]
    )


# -- a failure in chunk k: completed and partial exact ---------------------------------------------

# how -> (records of chunk k vouched for, cause, when the transport is aborted): a transfer that
# did not finish is aborted; a chunk whose output is bad aborts the next one, already started;
# a device that is gone is left alone
FAILURES = {
    "timeout": (0, "timeout", "always"),
    "no_trailer": (0, "framing", "next started"),
    "early_tlast": (VOUCHED, "trailer", "next started"),
    "oserror": (0, "device_lost", "never"),
    "lost": (0, "device_lost", "never"),
}


@pytest.mark.parametrize("how", FAILURES)
@pytest.mark.parametrize("k", range(CHUNKS))
def test_a_failure_in_chunk_k_keeps_the_chunks_before_it_and_what_k_vouched_for(k, how):
    vouched, cause, aborted = FAILURES[how]
    t = FakeTransport(fail=(k, how))
    driver = EngineDriver(t, "fake")
    with pytest.raises(BackendError) as ei:
        driver.run(XXH64, KEYS, CHUNK)
    e = ei.value
    assert e.cause == cause
    assert e.completed == k * CHUNK + vouched
    if e.completed:
        assert np.asarray(e.partial).tolist() == EXPECTED[: e.completed]
    else:
        assert e.partial is None
    assert (("abort", -1) in t.log) == (aborted == "always" or aborted == "next started" and k < CHUNKS - 1)
    assert (driver.lost is not None) == (cause == "device_lost")


def test_a_lost_device_is_named_and_not_reset():
    t = FakeTransport(fail=(2, "oserror"))
    driver = EngineDriver(t, "fake")
    with pytest.raises(BackendError, match=r"^fake: the fake device lost: \[Errno 19\] gone$"):
        driver.run(XXH64, KEYS, CHUNK)
    assert driver.lost == "the fake device lost: [Errno 19] gone"
    assert ("abort", -1) not in t.log


def test_the_engine_runs_again_after_a_reset():
    t = FakeTransport(fail=(1, "timeout"))
    driver = EngineDriver(t, "fake")
    with pytest.raises(BackendError):
        driver.run(XXH64, KEYS, CHUNK)
    t.fail = None
    assert driver.run(XXH64, KEYS, CHUNK).tolist() == EXPECTED


@pytest.mark.parametrize("k", range(3))
def test_encoded_results_are_exact_across_chunks(k):
    """delta_varint_encode's (offsets, bytes) parts join into one exact partial."""
    seqs = as_sequences([np.arange(i % 7, dtype=np.int64) * (i - 20) for i in range(24)])
    call = make_call("delta_varint_encode")
    want = golden(call, seqs)
    t = FakeTransport(fail=(k, "early_tlast"))
    with pytest.raises(BackendError) as ei:
        run(t, call=call, batch=seqs)
    e = ei.value
    assert e.completed == k * CHUNK + VOUCHED
    offs, data = e.partial
    assert [data[offs[i] : offs[i + 1]].tobytes() for i in range(e.completed)] == want[: e.completed]
    offs, data = run(FakeTransport(), call=call, batch=seqs)
    assert [data[offs[i] : offs[i + 1]].tobytes() for i in range(seqs.n)] == want


def test_chunk_results_restate_a_chunk_error_for_the_batch():
    done = ChunkResults("xxh64")
    done.add(Chunk(0, 2, None), np.array([1, 2], np.uint64))  # type: ignore[arg-type]
    done.add(Chunk(2, 3, None), np.array([3], np.uint64))  # type: ignore[arg-type]
    e = done.failure(BackendError("x", cause="trailer", completed=1, partial=np.array([4], np.uint64)))
    assert (str(e), e.cause, e.completed, e.partial.tolist()) == ("x", "trailer", 4, [1, 2, 3, 4])
    e = done.failure(BackendError("y", cause="framing", completed=7))  # no partial: vouches for none
    assert (e.completed, e.partial.tolist()) == (3, [1, 2, 3])


# -- transfers longer than the transport carries ---------------------------------------------------


def test_a_chunk_too_long_for_the_transport_is_halved():
    t = FakeTransport(max_words=5)  # 8 records need 9 output words: chunks of 4
    assert run(t).tolist() == EXPECTED
    assert [a for what, a in t.log if what == "start"] == list(range(0, N, 4))


def test_a_record_too_long_for_the_transport_is_too_large():
    strings = as_records([b"a", b"b", b"c" * 64, b"d"])
    t = FakeTransport(max_words=8)  # the third record needs 9 words
    with pytest.raises(
        BackendError,
        match=r"^fake: record 2 needs a transfer of 72 bytes, more "
        r"than the FIFO's 64$",
    ) as ei:
        run(t, batch=strings, chunk=4)
    assert (ei.value.cause, ei.value.completed) == ("too_large", 0)  # record 1's chunk was aborted
    assert ("abort", -1) in t.log


# -- the engine's identity and capabilities --------------------------------------------------------


class Regs(ReferenceEngineModel):
    """The reference engine with some read-only registers replaced."""

    def __init__(self, **regs: int) -> None:
        super().__init__(table_depth=16, ops=0b110)  # OP 1 and 2: xxh32, xxh64
        self.over = {REGISTERS[k]: v for k, v in regs.items()}

    def read(self, addr: int) -> int:
        return self.over.get(addr, super().read(addr))


def test_info_reads_the_engine_registers():
    info = read_info(Regs(SEQ_MAX=77, RECORD_MAX=500).read, "fake")
    got = (
        info.caps.ops,
        info.caps.max_boundaries,
        info.ops_mask,
        info.seq_max,
        info.version,
        info.record_max,
    )
    assert got == (frozenset({"xxh32", "xxh64"}), 16, 0b110, 77, ENGINE_VERSION, 500)
    # SEQ_MAX came with wire format 1.1, RECORD_MAX with 1.2: older engines read as their defaults
    old = read_info(Regs(VERSION=0x00010000, SEQ_MAX=77, RECORD_MAX=500).read, "fake")
    assert (old.seq_max, old.record_max) == (DEFAULT_SEQ_MAX, NO_RECORD_MAX)
    v11 = read_info(Regs(VERSION=0x00010001, SEQ_MAX=77, RECORD_MAX=500).read, "fake")
    assert (v11.seq_max, v11.record_max) == (77, NO_RECORD_MAX)


def test_a_record_longer_than_record_max_is_refused_for_the_limited_op_codes_only():
    info = read_info(Regs(RECORD_MAX=100).read, "fake")
    info = dataclasses.replace(info, ops_mask=engine_map.ops_mask())
    recs = as_records([b"x" * 100, b"y" * 101])
    assert supports_on_engine(info, make_call("farmhash64"), recs) == (
        "a record has 101 bytes, the engine's farmhash64 takes at most 100"
    )
    assert supports_on_engine(info, make_call("hash_bucket", num_buckets=9, hash="cityhash64"), recs) == (
        "a record has 101 bytes, the engine's hash_bucket takes at most 100"
    )
    assert supports_on_engine(info, make_call("xxh64"), recs) is None  # no limit on XXH64
    assert supports_on_engine(info, make_call("farmhash64"), as_records([b"x" * 100])) is None


@pytest.mark.parametrize(
    "regs,message",
    [
        ({"ID": 0x1234}, rf"^fake: engine ID register reads 0x00001234, expected 0x{ENGINE_ID:08x}$"),
        (
            {"VERSION": 0x00020000},
            rf"^fake: engine wire format 2\.0 is not compatible with the host's "
            rf"1\.{ENGINE_VERSION & 0xFFFF}$",
        ),
    ],
)
def test_a_foreign_engine_is_refused(regs, message):
    with pytest.raises(BackendError, match=message) as ei:
        read_info(Regs(**regs).read, "fake")
    assert ei.value.cause == "device"


def test_supports_answers_from_the_engine():
    driver = EngineDriver(FakeTransport(engine=Regs(SEQ_MAX=4)), "fake")
    assert driver.supports(XXH64, KEYS) is None
    assert (
        driver.supports(make_call("fid", slot=1, version=1), KEYS)
        == "the engine is built without op 5 (fid(slot=1, version=1, seed=0, hash='xxh64'))"
    )
    seqs = as_sequences([np.arange(5, dtype=np.int64)])
    assert (
        EngineDriver(FakeTransport(engine=Regs(SEQ_MAX=4, OPS=1 << 9)), "fake").supports(
            make_call("delta_varint_encode"), seqs
        )
        == "a sequence has 5 values, the engine encodes at most 4"
    )
