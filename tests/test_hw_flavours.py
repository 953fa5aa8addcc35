"""The two multiplier flavours of the hash cores are cycle-identical at the ports.

``multipliers="lut"`` (adder trees, what is synthesised) and ``multipliers="behavioural"`` (one
``*`` per product, delayed to the adder tree's depth: ``rtl/offload_engine_sim.v``, what the
``sim`` backend runs) must be interchangeable: same latency, same outputs on the same cycles,
same register map. So each check runs both flavours *side by side in one simulation* on the same
stimulus and compares every output port of the two on every cycle (not only the results):

1. Amaranth simulator: every hash core (record cores, fixed cores, lane cores) on records of
   every boundary length with idle gaps, the post-processing cores (``ModPipe``, ``FastRange``)
   on edge divisors and ``Bucketize`` on every dtype, and ``OffloadEngine(lanes=1)`` on a short
   batch of every operator with gaps and backpressure (results also checked against golden, so
   the comparison is not between two idle designs);
2. Verilator: both exported flavours (``EngineModel(flavour=...)``) stream the same batches and
   return the same words, the same cycle counts and the same registers after each batch;
3. a mutation: one behavioural product made one register late fails check 1.
"""

from __future__ import annotations

import importlib
import math
import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal, Value
from amaranth.lib import wiring

from offload import engine_map, golden
from offload.hw import common
from offload.hw.bucketize import Bucketize
from offload.hw.engine import OffloadEngine
from offload.hw.enginesim import Batch, pack_seq, run_batches, unpack_seq_output
from offload.hw.lanes import XXH32Lane, XXH64Lane
from offload.hw.postproc import FastRange, ModPipe, ModReciprocal
from offload.hw.simutil import EqualWatch, run_flow
from offload.hw.xxhash import XXH32Core, XXH32Fixed, XXH64Core, XXH64Fixed
from tests.lengths import BOUNDARY_LENGTHS
from tests.test_hw_cores import FLOATS, _f32, _record_beats, _with_gaps, sim_bucketize
from tests.test_hw_engine import hash_op_batches

M64 = golden.MASK64


class Lockstep(Elaboratable):
    """Components ``a`` and ``b`` with the same signature, side by side.

    The pair looks like ``a`` to a driver (attribute access goes to ``a``): the driver sets
    ``a``'s inputs and ``b``'s inputs follow them. :attr:`monitor` (a background testbench,
    :meth:`offload.hw.simutil.EqualWatch.run`) compares every output port of ``a`` and ``b``
    on every clock cycle and records each difference in :attr:`mismatches` as ``(cycle,
    port, a_value, b_value)``."""

    def __init__(self, a: wiring.Component, b: wiring.Component):
        self.a, self.b = a, b
        pa = {path: (mem.flow, val) for path, mem, val in a.signature.flatten(a)}
        pb = {path: val for path, _mem, val in b.signature.flatten(b)}
        assert pa.keys() == pb.keys()
        live = [
            (p, f, Value.cast(v), Value.cast(pb[p]))
            for p, (f, v) in pa.items()
            if isinstance(Value.cast(v), Signal) or hasattr(v, "as_value")
        ]
        self.inputs = [(va, vb) for _p, f, va, vb in live if f == wiring.In]
        self.outputs = [(".".join(p), va, vb) for p, f, va, vb in live if f == wiring.Out]
        self.watch = EqualWatch(self.outputs)
        self.monitor = self.watch.run

    def __getattr__(self, name):
        return getattr(self.__dict__["a"], name)

    def elaborate(self, platform):
        m = Module()
        m.submodules.a = self.a
        m.submodules.b = self.b
        m.d.comb += [vb.eq(va) for va, vb in self.inputs]
        return m

    @property
    def mismatches(self) -> list[tuple[int, str, int, int]]:
        return self.watch.differ

    @property
    def cycles(self) -> int:
        return self.watch.cycles


def _check(pair: Lockstep, min_cycles: int) -> None:
    assert pair.cycles >= min_cycles, pair.cycles
    assert not pair.mismatches, f"{len(pair.mismatches)} port differences, first: {pair.mismatches[:3]}"


def _flavours(make):
    return Lockstep(make("lut"), make("behavioural"))


def _records(rng, lengths):
    return [bytes(rng.getrandbits(8) for _ in range(n)) for n in lengths]


# ------------------------------------------------------------------------------- 1. Amaranth


@pytest.mark.parametrize(
    "cls,model,seed",
    [(XXH64Core, golden.xxh64, 0x9E3779B185EBCA87), (XXH32Core, golden.xxh32, 0x9E3779B1)],
    ids=["XXH64Core", "XXH32Core"],
)
def test_record_core_flavours_cycle_identical(cls, model, seed):
    rng = random.Random(seed & 0xFF)
    lengths = list(range(34)) + [63, 64, 65, 127, 128, 129, 200]
    rng.shuffle(lengths)
    recs = _records(rng, lengths)
    beats = _with_gaps([b for r in recs for b in _record_beats(r)], rng, 0.25)
    pair = _flavours(lambda mul: cls(multipliers=mul))
    res, _ = run_flow(pair, beats, len(recs), params={"seed": seed}, monitor=pair.monitor)
    assert res == [model(r, seed) for r in recs]
    _check(pair, len(beats) + pair.a.latency)


@pytest.mark.parametrize(
    "cls,model,key_bytes",
    [
        (XXH64Fixed, golden.xxh64, 8),
        (XXH64Fixed, golden.xxh64, 4),
        (XXH32Fixed, golden.xxh32, 4),
        (XXH32Fixed, golden.xxh32, 8),
    ],
)
def test_fixed_core_flavours_cycle_identical(cls, model, key_bytes):
    rng = random.Random(key_bytes)
    keys = [rng.getrandbits(8 * key_bytes) for _ in range(40)] + [0, (1 << 8 * key_bytes) - 1]
    seed = rng.getrandbits(64 if cls is XXH64Fixed else 32)
    pair = _flavours(lambda mul: cls(key_bytes, multipliers=mul))
    res, _ = run_flow(
        pair, _with_gaps(keys, rng, 0.25), len(keys), params={"seed": seed}, monitor=pair.monitor
    )
    assert res == [model(k.to_bytes(key_bytes, "little"), seed) for k in keys]
    _check(pair, len(keys) + pair.a.latency)


@pytest.mark.parametrize(
    "cls,model,core",
    [(XXH64Lane, golden.xxh64, XXH64Core), (XXH32Lane, golden.xxh32, XXH32Core)],
    ids=["XXH64Lane", "XXH32Lane"],
)
@pytest.mark.parametrize("key8", [0, 1])
def test_lane_core_flavours_cycle_identical(cls, model, core, key8):
    rng = random.Random(key8)
    kb = 8 if key8 else 4
    keys = [rng.getrandbits(64) for _ in range(40)] + [0, M64]
    seed = rng.getrandbits(cls.WIDTH)
    latency = _latency_of(core)
    pair = _flavours(lambda mul: cls(latency, multipliers=mul))
    res, _ = run_flow(
        pair,
        _with_gaps(keys, rng, 0.25),
        len(keys),
        params={"seed": seed, "key8": key8},
        monitor=pair.monitor,
    )
    assert res == [model((k & ((1 << 8 * kb) - 1)).to_bytes(kb, "little"), seed) for k in keys]
    _check(pair, len(keys) + latency)


@pytest.mark.parametrize(
    "make",
    [lambda m: ModPipe(1, m), lambda m: ModPipe(2, m), ModReciprocal, FastRange],
    ids=["ModPipe1", "ModPipe2", "ModReciprocal", "FastRange"],
)
def test_post_core_flavours_cycle_identical(make):
    """ModPipe/ModReciprocal/FastRange: the behavioural flavour's one ``%``/``*`` delayed to
    the pipeline's depth against the subtract pipeline, the reciprocal's multiplies, the adder
    pipeline, on edge divisors (0 included: ``h``); ModReciprocal's values come ``setup``
    cycles after ``num_buckets``, as its contract says."""
    rng = random.Random(11)
    hs = [0, 1, 2, M64, M64 - 1, 1 << 63, (1 << 63) - 1] + [rng.getrandbits(64) for _ in range(12)]
    for n in [0, 1, 3, 1 << 32, (1 << 63) + 1, M64, rng.getrandbits(64), rng.getrandbits(20)]:
        pair = _flavours(make)
        res, _ = run_flow(
            pair,
            _with_gaps(hs, rng, 0.25),
            len(hs),
            params={"num_buckets": n},
            monitor=pair.monitor,
            settle=getattr(pair.a, "setup", 3),
        )
        want = (
            [h % n if n else h for h in hs]
            if isinstance(pair.a, (ModPipe, ModReciprocal))
            else [golden.fastrange64(h, n) for h in hs]
        )
        assert res == want, n
        _check(pair, len(hs) + pair.a.latency)


@pytest.mark.parametrize("dtype", [0, 1, 2, 3])
def test_bucketize_flavours_cycle_identical(dtype):
    """Bucketize: the behavioural flavour's registered boundary key and native compare against
    the raw boundary register and split compares, every dtype, both sides, ±0.0 and NaN."""
    rng = random.Random(dtype)
    if dtype in (0, 1):
        lim = 1 << (31 if dtype == 0 else 63)
        bounds = sorted({rng.randrange(-lim, lim) for _ in range(9)} | {-lim, -1, 0, lim - 1})
        xs = bounds + [rng.randrange(-lim, lim) for _ in range(8)] + [-lim, 1, lim - 1]
    else:
        conv = _f32 if dtype == 2 else float
        bounds = sorted({conv(x) for x in (-1e30, -2.5, -1.0, 1.0, 2.5, math.inf)}) + [-0.0]
        bounds.sort()
        xs = [conv(x) for x in FLOATS] + [math.nan, -math.nan, conv(0.75), conv(-1e-30)]
    for right in (True, False):
        pair = _flavours(lambda mul: Bucketize(16, mul))
        res = sim_bucketize(xs, bounds, dtype, right, dut=pair, monitor=pair.monitor)
        assert res == [golden.bucketize(x, bounds, right) for x in xs], right
        _check(pair, len(xs) + pair.a.latency)


def _latency_of(core_cls, **params) -> int:
    core = core_cls(**params)
    core._MustUse__silence = True  # built only to read its latency
    return core.latency


def _engine_batches():
    """A short batch per operator (every hash op in FIXED8, FIXED4 and VAR, both bucketize
    sides, delta_varint_encode) and its golden results."""
    rng = random.Random(5)
    keys = [rng.getrandbits(64) for _ in range(6)] + [0, M64]
    recs = _records(rng, [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65])
    seed = rng.getrandbits(64)
    batches, expect = hash_op_batches(keys, recs, seed)
    bounds, xs = [-5, 0, 7, 1000], [-6, -5, 0, 3, 7, 8, 1000, 2**40]
    for op, right in ((7, True), (8, False)):
        batches.append(
            Batch(
                dict(OP=op, FORMAT=0, DTYPE=1, COUNT=len(xs), NUM_BOUNDARIES=len(bounds)),
                [x & M64 for x in xs],
                table=[b & M64 for b in bounds],
            )
        )
        expect.append([golden.bucketize(x, bounds, right) for x in xs])
    seqs = [[], [5], [1, 2, 3], [2**63 - 1, -(2**63), 0], [rng.randrange(-1000, 1000) for _ in range(9)]]
    batches.append(Batch(dict(OP=9, FORMAT=3, COUNT=len(seqs)), pack_seq(seqs)))
    expect.append([golden.delta_varint_encode_seq(s) for s in seqs])
    return batches, expect


def test_engine_flavours_cycle_identical():
    """OffloadEngine(lanes=1): every output port (AXI-Stream and AXI-Lite) of the two flavours
    on every cycle of a run with every operator, input gaps and output backpressure."""

    def make(mul):
        return OffloadEngine(table_depth=16, fifo_depth=512, seq_max=64, multipliers=mul)

    pair = _flavours(make)
    assert pair.a.latency == pair.b.latency and pair.a.SLACK == pair.b.SLACK
    batches, expect = _engine_batches()
    results = run_batches(batches, engine=pair, valid_prob=0.8, ready_prob=0.7, monitor=pair.monitor)
    for b, res, exp in zip(batches, results, expect):
        assert not res.timed_out
        if b.regs["OP"] == 9:
            assert unpack_seq_output(res.out, len(exp))[0] == exp
        else:
            assert res.out[:-1] == exp, (b.regs["OP"], b.regs["FORMAT"])
    _check(pair, 1000)


def test_multipliers_parameter_is_validated():
    msg = "multipliers must be one of 'lut', 'behavioural', not 'dsp'"
    for make in (
        lambda: XXH64Core(multipliers="dsp"),
        lambda: XXH32Core(multipliers="dsp"),
        lambda: XXH64Fixed(8, multipliers="dsp"),
        lambda: XXH32Fixed(4, multipliers="dsp"),
        lambda: XXH64Lane(100, multipliers="dsp"),
        lambda: XXH32Lane(100, multipliers="dsp"),
        lambda: OffloadEngine(multipliers="dsp"),
        lambda: ModPipe(1, multipliers="dsp"),
        lambda: ModReciprocal(multipliers="dsp"),
        lambda: FastRange(multipliers="dsp"),
        lambda: Bucketize(16, multipliers="dsp"),
    ):
        with pytest.raises(ValueError) as e:
            make()
        assert str(e.value) == msg
    for cls in (XXH64Core, XXH32Core):
        assert _latency_of(cls, multipliers="behavioural") == _latency_of(cls)


# ------------------------------------------------------------------------------- 2. Verilator

#: The two flavours of one build, cycle-identical at the ports ("full" is another build).
PAIR = ("lut", "behavioural")


def _verilator_unavailable() -> str | None:
    try:
        from offload.sim import verilator as v

        v.toolchain()
        for flavour in PAIR:
            v.sources(flavour)
        importlib.import_module("pyverilator")
    except Exception as e:  # ToolchainError, ImportError
        return str(e)
    return None


@pytest.fixture(scope="module")
def models():
    """One Verilator model per flavour, same drive-loop seed (same random gaps)."""
    why = _verilator_unavailable()
    if why:
        pytest.skip(reason=f"Verilator model unavailable: {why}")
    from offload.sim import verilator as v

    ms = {f: v.EngineModel(seed=3, flavour=f) for f in PAIR}
    yield ms
    for m in ms.values():
        m.close()


def _verilator_cases():
    from offload.batch import as_numbers, as_records, as_sequences
    from offload.ops import make_call

    rng = random.Random(7)
    keys = np.array([rng.getrandbits(64) for _ in range(300)] + [0, M64], dtype=np.uint64)
    recs = _records(rng, BOUNDARY_LENGTHS * 2)
    return [
        ("xxh64-fixed", make_call("xxh64", seed=3), as_records(keys)),
        ("xxh64-var", make_call("xxh64", seed=1 << 63), as_records(recs)),
        ("xxh32-fixed4", make_call("xxh32", seed=5), as_records(keys.astype(np.uint32))),
        ("xxh32-var", make_call("xxh32", seed=0xDEADBEEF), as_records(recs)),
        ("mod", make_call("hash_bucket", num_buckets=1000003, seed=9), as_records(keys)),
        ("fid2", make_call("fid", slot=3000, version=2), as_records(recs)),
        (
            "bucketize",
            make_call("bucketize", boundaries=[0, 10, 100], dtype=np.int64),
            as_numbers(np.array([-5, 0, 3, 10, 11, 99, 1 << 40], dtype=np.int64)),
        ),
        ("varint", make_call("delta_varint_encode"), as_sequences([[1, 2, 3], [], [10, 5, 1 << 40]])),
    ]


def test_sim_backend_runs_the_full_builds_behavioural_flavour():
    """The sim backend's default model is the behavioural flavour of the full build;
    ``EngineModel()``'s is the LUT one of the default build; an unknown flavour is refused by
    name."""
    import inspect

    from offload.host.sim_backend import SimBackend
    from offload.sim import verilator as v

    assert SimBackend().flavour == "full"
    assert engine_map.FLAVOUR_PARAMS["full"] == {"multipliers": "behavioural", "operators": "full"}
    assert inspect.signature(v.EngineModel).parameters["flavour"].default == "lut"
    assert inspect.signature(v.build_engine).parameters["flavour"].default == "lut"
    msg = "flavour must be one of 'lut', 'behavioural', 'full', not 'dsp'"
    for bad in (lambda: SimBackend(flavour="dsp"), lambda: v.sources("dsp")):
        with pytest.raises(ValueError) as e:
            bad()
        assert str(e.value) == msg


@pytest.mark.verilator
@pytest.mark.xdist_group("verilator")
@pytest.mark.timeout(900)
@pytest.mark.parametrize("idle,bp", [(0, 0), (30, 40)])
def test_verilator_flavours_same_words_and_cycles(models, idle, bp):
    """The exported flavours under Verilator: the same batches give the same output words, the
    same status and accepted words, the same cycle count and the same registers afterwards."""
    from offload import wire
    from offload.host.engine_driver import program_engine
    from offload.ops import golden_result

    R = wire.REGISTERS
    for name, call, batch in _verilator_cases():
        job = wire.encode_request(call, batch)
        got = {}
        for flavour, m in models.items():
            program_engine(m.write, job)
            out, status, accepted, cycles = m.stream(
                job.words, job.out_words_max, idle_pct=idle, backpressure_pct=bp
            )
            regs = {r: m.read(R[r]) for r in ("STATUS", "ERR", "DONE_COUNT", "CYCLES_LO")}
            got[flavour] = (out.tolist(), status, accepted, cycles, regs)
        assert got["lut"] == got["behavioural"], name
        out, status, accepted, cycles, _ = got["lut"]
        assert status == 0 and accepted == job.words.shape[0] and cycles > batch.n, name
        res = wire.decode_response(job, np.array(out, dtype=np.uint64))
        want = [golden_result(call, batch.record(i)) for i in range(batch.n)]
        if isinstance(res, tuple):
            offs, data = res
            res = [data[offs[i] : offs[i + 1]].tobytes() for i in range(len(offs) - 1)]
        assert [r if isinstance(r, bytes) else int(r) for r in res] == [
            w if isinstance(w, bytes) else int(w) for w in want
        ], name


# ------------------------------------------------------------------------------- 3. mutation


def test_mutation_one_late_product_is_caught(monkeypatch):
    """A behavioural product one register late (its operand registered once more before the
    ``*``: a delay line one stage too long, with every stage count unchanged, so no assertion
    of the pipeline builders notices) must make the lockstep comparison fail."""
    original = common.Pipe.mul_tree
    calls = {"n": 0}

    def late(self, name, x, const, width, add=0, done=None):
        if self.behavioural:
            calls["n"] += 1
            if calls["n"] == 1:  # only the first product of the core
                r = Signal(Value.cast(x).shape(), name="mutant_late_x")
                self.m.d.sync += r.eq(x)
                x = r
        return original(self, name, x, const, width, add, done)

    monkeypatch.setattr(common.Pipe, "mul_tree", late)
    rng = random.Random(9)
    keys = [rng.getrandbits(64) for _ in range(20)]
    pair = _flavours(lambda mul: XXH64Fixed(8, multipliers=mul))
    run_flow(pair, _with_gaps(keys, rng, 0.25), len(keys), params={"seed": 3}, monitor=pair.monitor)
    assert calls["n"] >= 1
    assert pair.mismatches, "a one-cycle-late product went unnoticed"
    assert {name for _c, name, _a, _b in pair.mismatches} == {"o.payload"}
    with pytest.raises(AssertionError, match="port differences"):
        _check(pair, 1)
