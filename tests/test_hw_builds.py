"""Engine builds (the operator set as a build parameter), the framework hashes on the engine's
lanes, the FarmHash/CityHash record path (gathering, RECORD_MAX), in the Amaranth simulator.

Equations against the golden models: ``engine(build)(call, batch) == golden(call, batch)``,
with idle input cycles and output backpressure. The Verilator and cocotb layers are in
tests/test_framework_hashes.py and tests/test_cocotb.py.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from offload import engine_map, ops, wire
from offload.batch import as_numbers, as_records
from offload.hw.cityhash import HASH_CITY, HASH_FARM
from offload.hw.engine import OffloadEngine, build_codes
from offload.hw.enginesim import Batch, axil_read, run_batches, trailer_fields
from offload.hw.gather import CityFarmRecords, RecordGather
from offload.hw.lanebank import city_farm_hashes
from offload.hw.simutil import run_flow
from tests.lengths import BOUNDARY_LENGTHS
from tests.test_hw_cityhash import golden as city_farm_golden
from tests.test_hw_cityhash import params as city_farm_params
from tests.test_hw_cores import _record_beats, _with_gaps

M64 = (1 << 64) - 1


def _engine(build: str, lanes: int = 1, **kw) -> OffloadEngine:
    return OffloadEngine(operators=build, lanes=lanes, multipliers="behavioural", table_depth=16, **kw)


def _read_regs(dut: OffloadEngine, names: tuple[str, ...]) -> dict[str, int]:
    got: dict[str, int] = {}

    async def tb(ctx):
        for name in names:
            got[name] = await axil_read(ctx, dut, engine_map.REGISTERS[name])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return got


# ---------------------------------------------------------------------------------------------
# builds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", list(engine_map.BUILDS))
def test_a_build_reports_its_op_codes_and_record_limit(build):
    dut = _engine(build)
    regs = _read_regs(dut, ("OPS", "RECORD_MAX", "VERSION"))
    codes = [engine_map.OP_CODES[k] for k in engine_map.BUILDS[build]]
    limited = any(k in engine_map.RECORD_LIMITED for k in engine_map.BUILDS[build])
    assert regs == {
        "OPS": engine_map.ops_mask(codes),
        "RECORD_MAX": engine_map.DEFAULT_RECORD_MAX if limited else engine_map.NO_RECORD_MAX,
        "VERSION": engine_map.ENGINE_VERSION,
    }


def test_the_default_build_is_the_pynq_z2_one_without_the_city_farm_core():
    dut = OffloadEngine(multipliers="behavioural")
    dut._MustUse__silence = True  # read, never elaborated
    assert dut.decode.codes == build_codes("pynq-z2") == build_codes(engine_map.DEFAULT_BUILD)
    assert "cityfarm" not in dut.decode.paths()[0] and not dut.decode.built("cityfarm")
    farm = {"farmhash64", "cityhash64", "decimal_hash_bucket"}
    assert set(dut.operators) == {n for n, op in ops.REGISTRY.items() if op.wire} - farm


def test_a_build_of_some_operators_has_only_their_cores():
    dut = _engine(("xxh32", "hash_bucket/mod"))  # elaborated by run_batches
    assert dut.decode.codes == (engine_map.OP_CODES["xxh32"], engine_map.OP_CODES["hash_bucket/mod"])
    assert dut.operators == ("xxh32", "hash_bucket")
    assert sorted({c for p in dut.decode.paths() for c in p}) == ["mod", "xxh32", "xxh64"]
    keys = [b"", b"a", b"0123456789abcdef0"]
    call = ops.make_call("hash_bucket", num_buckets=97)
    job = wire.encode_request(call, as_records(keys))
    (res,) = run_batches([Batch(dict(job.regs), [int(w) for w in job.words])], engine=dut)
    assert res.out[:-1] == [ops.golden_result(call, k) for k in keys]
    # an op code not built is BAD_PARAM, its words discarded
    bad = wire.encode_request(ops.make_call("xxh64"), as_records(keys))
    (res,) = run_batches([Batch(dict(bad.regs), [int(w) for w in bad.words])], engine=dut)
    assert trailer_fields(res.out[-1])[:2] == (0, engine_map.ERR_FLAGS["BAD_PARAM"])


@pytest.mark.parametrize(
    "operators,message",
    [
        ("huge", r"^unknown engine build 'huge': expected one of 'pynq-z2', 'full'$"),
        (("xxh64", "sha1"), r"^unknown operator or op code 'sha1': expected one of xxh32, xxh64, "),
        (
            ("delta_varint_decode",),
            r"^operator 'delta_varint_decode' runs on the host only: the engine has no",
        ),
        ((), r"^operators must name at least one operator$"),
    ],
)
def test_a_bad_build_is_an_exact_error(operators, message):
    with pytest.raises(ValueError, match=message):
        OffloadEngine(operators=operators)


@pytest.mark.parametrize("record_max", [64, 1 << 17, True])
def test_a_bad_record_max_is_an_exact_error(record_max):
    with pytest.raises(
        ValueError, match=rf"^record_max must be an int between 65 and 65536, not {record_max!r}$"
    ):
        OffloadEngine(record_max=record_max)


# ---------------------------------------------------------------------------------------------
# the framework hashes on the engine
# ---------------------------------------------------------------------------------------------


def _records(rng: random.Random, max_len: int) -> list[bytes]:
    return [rng.randbytes(n) for n in BOUNDARY_LENGTHS if n <= max_len]


def _calls() -> list[ops.OpCall]:
    """One call per op code of the framework hashes (and hash_bucket/fid on top of them)."""
    calls = [
        ops.make_call("murmur3_32", seed=0xDEADBEEF),
        ops.make_call("murmur3_32", seed=7, tail="spark"),
        ops.make_call("farmhash64"),
        ops.make_call("cityhash64"),
        ops.make_call("cityhash64", seed=M64),
    ]
    for h, seeds in (("murmur3_32", [3]), ("farmhash64", [None]), ("cityhash64", [None, 1 << 63])):
        for seed in seeds:
            for method in ("mod", "fastrange") if h != "murmur3_32" else ("mod",):
                calls.append(
                    ops.make_call("hash_bucket", num_buckets=1_000_003, seed=seed, method=method, hash=h)
                )
            for version in (1, 2):
                calls.append(ops.make_call("fid", slot=1000, version=version, seed=seed, hash=h))
    return calls


CALLS = _calls()


def test_every_framework_op_code_is_called():
    codes = {wire.op_code(c) for c in CALLS}
    framework = {
        v for k, v in engine_map.OP_CODES.items() if any(h in k for h in ("murmur3", "farm", "city"))
    }
    assert codes == framework


def _run(dut: OffloadEngine, calls, batches, *, valid: float, ready: float, seed: int):
    jobs = [wire.encode_request(c, b) for c, b in zip(calls, batches)]
    stim = [Batch(dict(j.regs), [int(w) for w in j.words]) for j in jobs]
    return run_batches(stim, engine=dut, valid_prob=valid, ready_prob=ready, seed=seed, timeout=60000)


@pytest.mark.parametrize("lanes", [1, 2])
def test_the_full_build_equals_golden_on_records_with_gaps_and_backpressure(lanes):
    """Every framework op code on VAR records of the boundary lengths (up to RECORD_MAX), 8- and
    4-byte keys, with 30 % idle input cycles and output tready low 40 % of the time."""
    rng = random.Random(lanes)
    dut = _engine("full", lanes)
    calls, batches, want = [], [], []
    for call in CALLS:
        recs = _records(rng, engine_map.DEFAULT_RECORD_MAX)
        k8 = np.array([rng.getrandbits(64) for _ in range(9)], np.uint64)
        k4 = np.array([rng.getrandbits(32) for _ in range(7)], np.uint32)
        for values, raw in ((recs, recs), (k8, [int(k).to_bytes(8, "little") for k in k8])):
            calls.append(call)
            batches.append(as_records(values))
            want.append([ops.golden_result(call, r) for r in raw])
        calls.append(call)
        batches.append(as_records(k4))
        want.append([ops.golden_result(call, int(k).to_bytes(4, "little")) for k in k4])
    results = _run(dut, calls, batches, valid=0.7, ready=0.6, seed=lanes)
    for call, res, w in zip(calls, results, want):
        assert not res.timed_out
        assert res.out[:-1] == w, call.describe()
        assert trailer_fields(res.out[-1])[:2] == (len(w), 0)


@pytest.mark.parametrize(
    "build,hashes",
    [
        (("farmhash64", "hash_bucket/fastrange/farmhash64"), ("farm",)),
        (("cityhash64", "fid/2/cityhash64/seeded"), ("city",)),
    ],
)
def test_a_build_with_one_of_farm_and_city_builds_that_hash_only(build, hashes):
    """The record core is built for the hashes the build's op codes name (about half the area
    of both); its results are the golden model's, with gaps and backpressure."""
    rng = random.Random(7)
    dut = _engine(build)
    assert city_farm_hashes(dut.decode) == hashes
    recs = _records(rng, 300)
    calls = [c for c in CALLS if wire.op_code(c) in dut.decode.codes]
    assert len(calls) == 2
    results = _run(dut, calls, [as_records(recs)] * 2, valid=0.7, ready=0.6, seed=3)
    for call, res in zip(calls, results):
        assert res.out[:-1] == [ops.golden_result(call, r) for r in recs], call.describe()


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_sigrid_hash_equals_golden_with_gaps(dtype):
    rng = random.Random(5)
    info = np.iinfo(dtype)
    ids = np.array(
        [info.min, info.max, 0, -1, 1] + [rng.randint(info.min, info.max) for _ in range(40)], dtype
    )
    calls = [
        ops.make_call("sigrid_hash", dtype=dtype, salt=s, max_value=mv)
        for s, mv in ((0, 1), (-(1 << 63), (1 << 63) - 1), (123456789, 1000003))
    ]
    results = _run(_engine("pynq-z2", 2), calls, [as_numbers(ids)] * len(calls), valid=0.7, ready=0.6, seed=9)
    for call, res in zip(calls, results):
        assert res.out[:-1] == [ops.golden_result(call, int(v)) & M64 for v in ids], call.describe()


@pytest.mark.parametrize("lanes", [1, 2])
def test_decimal_hash_bucket_equals_golden_with_gaps(lanes):
    """Keras-style integers: the engine's binary-to-decimal stage and FarmHash lane, then the mod
    core, on int64 and int32 values of every digit count, both signs and the extremes."""
    rng = random.Random(lanes)
    calls, batches = [], []
    for dtype in (np.int64, np.int32):
        info = np.iinfo(dtype)
        digits = [rng.randint(-(10**k), 10**k) for k in range(1, 19) if 10**k < info.max]
        vals = np.array([info.min, info.max, 0, -1, 9, 10, -99, 100, *digits], dtype)
        for nb in (1, 1000, 1 << 63):
            calls.append(ops.make_call("decimal_hash_bucket", num_buckets=nb, dtype=dtype))
            batches.append(as_numbers(vals))
    results = _run(_engine("full", lanes), calls, batches, valid=0.7, ready=0.6, seed=lanes)
    for call, batch, res in zip(calls, batches, results):
        want = [ops.golden_result(call, int(v)) for v in batch.values]
        assert res.out[:-1] == want, call.describe()


def test_a_record_longer_than_record_max_is_a_bad_header_for_farm_and_city_only():
    dut = _engine("full", record_max=100)
    recs = [b"a" * 100, b"b" * 101, b"c"]
    calls = [
        ops.make_call("farmhash64"),
        ops.make_call("fid", slot=1, hash="cityhash64"),
        ops.make_call("xxh64"),
    ]
    results = _run(dut, calls, [as_records(recs)] * 3, valid=1.0, ready=1.0, seed=0)
    for call, res in zip(calls[:2], results):
        assert res.out[:-1] == [ops.golden_result(call, recs[0])]  # the record before it
        assert trailer_fields(res.out[-1])[:2] == (1, engine_map.ERR_FLAGS["BAD_HEADER"])
    assert results[2].out[:-1] == [ops.golden_result(calls[2], r) for r in recs]
    job = wire.encode_request(calls[0], as_records(recs))
    out, err = wire.reference_engine(job.regs, job.table, job.words, record_max=100)
    assert [int(w) for w in out] == results[0].out and err == results[0].regs["ERR"]


# ---------------------------------------------------------------------------------------------
# CityFarmRecords: the gather and one single-hash core per hash
# ---------------------------------------------------------------------------------------------


def _city_farm_records(hash_: int, seed: int | None, records: list[bytes], gap_prob: float):
    """CityFarmRecords with both hashes on ``records``: (results, the cycle of each, the core)."""
    dut = CityFarmRecords(engine_map.DEFAULT_RECORD_MAX, multipliers="behavioural")
    beats = [b for r in records for b in _record_beats(r)]
    beats = _with_gaps(beats, random.Random(len(records)), gap_prob) if gap_prob else beats
    params = city_farm_params(hash_, seed)
    return *run_flow(dut, beats, len(records), params=params, timeout=dut.latency + 50), dut


@pytest.mark.parametrize("hash_,seed", [(HASH_FARM, None), (HASH_CITY, None), (HASH_CITY, M64)])
def test_the_record_core_of_both_hashes_equals_golden_with_gaps(hash_, seed):
    """``hash`` sends the records to that hash's core; nothing from the other core reaches ``o``
    (records over 32 bytes, where the two hashes differ, catch a record sent to the wrong one)."""
    recs = _records(random.Random(hash_), engine_map.DEFAULT_RECORD_MAX)
    got, _, _ = _city_farm_records(hash_, seed, recs, 0.3)
    assert got == [city_farm_golden(r, hash_, seed) for r in recs]


def test_both_hashes_leave_the_record_core_at_its_fixed_latency():
    """The FarmHash core's results wait for the CityHash core's latency: one-word records, one
    per cycle, come out of both at :attr:`fixed_latency` (the other lanes are padded to it).
    (Up to 32 bytes the hashes agree: which core computed them is the test above's question.)"""
    keys = [bytes([k]) * 8 for k in range(6)]
    for hash_ in (HASH_FARM, HASH_CITY):
        got, when, dut = _city_farm_records(hash_, None, keys, 0.0)
        assert dut.cores["farm"].latency < dut.cores["city"].latency
        assert got == [city_farm_golden(k, hash_, None) for k in keys]
        assert when == [3 + 1 + dut.fixed_latency + k for k in range(len(keys))]  # settle, first key


# ---------------------------------------------------------------------------------------------
# RecordGather
# ---------------------------------------------------------------------------------------------


def _gather(max_words: int, records: list[list[int]], valid: float, seed: int):
    """Drive RecordGather: returns [(cycle, word, first, last)] out and each record's last-in cycle."""
    dut = RecordGather(max_words)
    rng = random.Random(seed)
    stream = [(w, k == 0, k == len(r) - 1) for r in records for k, w in enumerate(r)]
    out, last_in = [], []

    async def tb(ctx):
        i, cycle = 0, 0
        while len(out) < len(stream):
            go = i < len(stream) and rng.random() < valid
            ctx.set(dut.i.valid, go)
            if go:
                d, f, last = stream[i]
                ctx.set(dut.i.payload.data, d)
                ctx.set(dut.i.payload.first, f)
                ctx.set(dut.i.payload.last, last)
                if last:
                    last_in.append(cycle)
                i += 1
            _, _, v, d, f, last = await ctx.tick().sample(
                dut.o.valid, dut.o.payload.data, dut.o.payload.first, dut.o.payload.last
            )
            cycle += 1
            if v:
                out.append((cycle, d, f, last))
            assert cycle < 100 * len(stream) + 100, "RecordGather hangs"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return dut, stream, out, last_in


@pytest.mark.parametrize("valid", [1.0, 0.5, 0.1])
def test_record_gather_releases_each_record_back_to_back_in_order(valid):
    rng = random.Random(3)
    max_words = 9
    records = [[rng.getrandbits(64) for _ in range(rng.choice([1, 1, 2, 8, 9]))] for _ in range(150)]
    dut, stream, out, last_in = _gather(max_words, records, valid, seed=int(valid * 10))
    assert [(d, f, last) for _, d, f, last in out] == stream
    starts = [k for k, (_, _, f, _) in enumerate(out) if f]
    for rec, s in zip(records, starts):  # a record's words on consecutive cycles
        assert [c for c, *_ in out[s : s + len(rec)]] == list(range(out[s][0], out[s][0] + len(rec)))
    last_out = [c for c, _, _, last in out if last]
    assert max(o - i for i, o in zip(last_in, last_out)) <= dut.delay_max


def test_record_gather_checks_fail_on_a_reordered_stream():
    """The equation above can fail: a gather that swapped two words would be caught."""
    records = [[1, 2], [3]]
    _, stream, out, _ = _gather(4, records, 1.0, seed=0)
    swapped = [out[1], out[0], *out[2:]]
    assert [(d, f, last) for _, d, f, last in swapped] != stream


def test_record_gather_refuses_a_bad_size():
    with pytest.raises(ValueError, match=r"^max_words must be a positive int, not 0$"):
        RecordGather(0)
