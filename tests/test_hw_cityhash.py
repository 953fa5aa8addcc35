"""The CityHash64 / FarmHash Fingerprint64 cores as plain Python functions, checked against the
golden model (``offload.golden_cityhash``) as equations in the Amaranth simulator.

Most runs use the ``"behavioural"`` multipliers (cycle-identical at the ports, one ``*`` per
product: the Python simulator is slow); one run per core and build checks the ``"lut"`` adder
trees that are synthesised. Every build (``hashes``: both hashes, CityHash only, FarmHash
only) is checked against the golden model of its hash for every length path. The cores have
no ``ready`` (always-ready input, always-taken output, as the XXH cores): "backpressure" for
them is the idle cycles between and inside records.
"""

from __future__ import annotations

import random
import re

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from offload import golden_cityhash
from offload.golden_cityhash import cityhash64, farmhash64
from offload.hw import cityhash as hw_cityhash
from offload.hw.cityhash import HASH_CITY, HASH_FARM, CityFarmCore, CityFarmLane
from offload.hw.simutil import CLOCK_PERIOD, run_flow
from tests.lengths import BOUNDARY_LENGTHS
from tests.test_hw_cores import _record_beats, _records, _with_gaps

M64 = (1 << 64) - 1
SEEDS = [0, 1 << 63, M64]
# Every length path and its edges: 0..200 covers 0..16, 17..32, 33..64 and 1..2 chunks of the
# loop with every remainder; 256 and 513 several chunks, a whole last chunk and a 1-byte tail.
LENGTHS = list(range(0, 201)) + [256, 513]
LANE_DEPTH = CityFarmLane._natural_depth("csa")  # latency=None: this many cycles


def golden(rec: bytes, hash_: int, seed: int | None) -> int:
    return farmhash64(rec) if hash_ == HASH_FARM else cityhash64(rec, seed)


def params(hash_: int, seed: int | None) -> dict[str, int]:
    return {"hash": hash_, "seeded": int(seed is not None), "seed": seed or 0}


def sim_core(records, hash_, seed=None, *, gap_prob=0.0, rng=None, multipliers="behavioural", **kw):
    """The core's results for ``records`` (and the cycle each appeared, the beats applied)."""
    beats = [b for r in records for b in _record_beats(r)]
    beats = _with_gaps(beats, rng or random.Random(0), gap_prob) if gap_prob else beats
    dut = CityFarmCore(multipliers=multipliers, **kw)
    res, when = run_flow(dut, beats, len(records), params=params(hash_, seed), timeout=dut.latency + 50)
    return res, when, beats, dut


def sim_lane(keys, key_bytes, hash_, seed=None, multipliers="behavioural", **kw):
    dut = CityFarmLane(multipliers=multipliers, **kw)
    res, when = run_flow(dut, keys, len(keys), params={"key8": int(key_bytes == 8), **params(hash_, seed)})
    return res, when, dut


# ------------------------------------------------------------------------------ lane


@pytest.mark.parametrize("key_bytes", [4, 8])
def test_lane_every_hash_and_seed(key_bytes):
    rng = random.Random(key_bytes)
    keys = [rng.getrandbits(8 * key_bytes) for _ in range(30)] + [0, (1 << 8 * key_bytes) - 1]
    recs = [k.to_bytes(key_bytes, "little") for k in keys]
    for hash_, seed in [(HASH_FARM, None), (HASH_CITY, None)] + [(HASH_CITY, s) for s in SEEDS]:
        res, when, dut = sim_lane(keys, key_bytes, hash_, seed)
        assert res == [golden(r, hash_, seed) for r in recs], (hash_, seed)
        assert when == list(range(when[0], when[0] + len(keys)))  # one key per cycle
        assert when[0] == 3 + 1 + dut.latency  # settle, then the first key's cycle + latency
    # FarmHash has no seeded form: ``seeded`` only applies to CityHash.
    res, _, _ = sim_lane(keys[:4], key_bytes, HASH_FARM, M64)
    assert res == [farmhash64(r) for r in recs[:4]]


def test_lane_lut_multipliers_and_padding():
    rng = random.Random(9)
    keys = [rng.getrandbits(64) for _ in range(8)]
    res, _, _ = sim_lane(keys, 8, HASH_CITY, 1 << 63, multipliers="lut")
    assert res == [cityhash64(k.to_bytes(8, "little"), 1 << 63) for k in keys]
    dut = CityFarmLane(latency=LANE_DEPTH + 7)
    res, when = run_flow(dut, [keys[0], None, keys[1]], 2, params={"key8": 1})
    assert res == [farmhash64(k.to_bytes(8, "little")) for k in keys[:2]]
    assert when == [3 + 1 + dut.latency, 3 + 3 + dut.latency]


# ------------------------------------------------------------------------------ record core


def test_core_every_length_city():
    recs = _records(random.Random(1), LENGTHS)
    res, when, beats, dut = sim_core(recs, HASH_CITY)
    assert res == [cityhash64(r) for r in recs]
    # No gaps: the results of back-to-back records leave exactly `latency` after their last word.
    last = [i for i, b in enumerate(beats) if b["last"]]
    assert when == [3 + 1 + i + dut.latency for i in last]


def test_core_every_length_farm_idle_gaps_shuffled():
    rng = random.Random(2)
    lengths = LENGTHS[:]
    rng.shuffle(lengths)
    recs = _records(rng, lengths)
    res, _, _, _ = sim_core(recs, HASH_FARM, gap_prob=0.2, rng=rng)
    assert res == [farmhash64(r) for r in recs]


@pytest.mark.parametrize("seed", SEEDS)
def test_core_seeded_boundary_lengths_idle_gaps(seed):
    rng = random.Random(seed & 0xFFFF)
    recs = _records(rng, BOUNDARY_LENGTHS)
    # 1000 bytes with 25 % idle cycles take ~170 cycles: a span beyond max_bytes=1024's 128.
    res, _, _, dut = sim_core(recs, HASH_CITY, seed, gap_prob=0.25, rng=rng, max_bytes=2048)
    assert res == [cityhash64(r, seed) for r in recs]


def test_core_lut_multipliers():
    # Every kind of product (constant, length-dependent, z-dependent, with added terms, narrow
    # operands) in the adder trees that are synthesised; the seed steps are the lane's.
    recs = _records(random.Random(4), [3, 8, 17, 40, 130])
    res, _, _, _ = sim_core(recs, HASH_FARM, multipliers="lut")
    assert res == [farmhash64(r) for r in recs]


def test_core_one_word_per_cycle_random_mix():
    """1000 records of a random length mix (every path: mostly short, some over one to three
    chunks), back to back: every result leaves `latency` cycles after its record's last word,
    so the core takes one word per cycle (the measured figure: words / cycles = 1.0) and never
    falls behind."""
    rng = random.Random(5)
    mix = [(0, 17)] * 12 + [(17, 65)] * 2 + [(65, 200)]
    lengths = [rng.randrange(*rng.choice(mix)) for _ in range(1000)]
    recs = _records(rng, lengths)
    res, when, beats, dut = sim_core(recs, HASH_FARM)
    assert res == [farmhash64(r) for r in recs]
    last = [i for i, b in enumerate(beats) if b["last"]]
    assert when == [3 + 1 + i + dut.latency for i in last]
    words_per_cycle = len(beats) / (when[-1] - dut.latency - 3)
    assert words_per_cycle == 1.0 and len(beats) >= 2000


# ------------------------------------------------------------------------------ one-hash builds

BUILDS = [(("farm",), HASH_FARM), (("city",), HASH_CITY)]


@pytest.mark.parametrize("hashes,hash_", BUILDS)
def test_core_one_hash_every_length(hashes, hash_):
    """A one-hash core computes its hash for every length path; ``hash`` is ignored (set to
    the other hash here), and a CityHash-only core applies ``seeded``."""
    recs = _records(random.Random(7), LENGTHS)
    other = HASH_CITY if hash_ == HASH_FARM else HASH_FARM
    res, when, beats, dut = sim_core(recs, other, hashes=hashes)
    assert res == [golden(r, hash_, None) for r in recs]
    last = [i for i, b in enumerate(beats) if b["last"]]
    assert when == [3 + 1 + i + dut.latency for i in last]
    if hash_ == HASH_CITY:
        res, _, _, _ = sim_core(recs[60:80], other, 1 << 63, hashes=hashes)
        assert res == [cityhash64(r, 1 << 63) for r in recs[60:80]]
    else:
        # FarmHash has no seeded form: a FarmHash-only core ignores seeded and seed.
        res, _, _, _ = sim_core(recs[60:80], HASH_CITY, M64, hashes=hashes)
        assert res == [farmhash64(r) for r in recs[60:80]]


@pytest.mark.parametrize(
    "hashes,hash_", BUILDS + [(("city", "farm"), HASH_FARM), (("city", "farm"), HASH_CITY)]
)
def test_core_long_records_at_the_closest(hashes, hash_):
    """Records over 64 bytes share the long paths' multipliers and hold registers: back to
    back at 9 words (65..72 bytes, the closest two can be) and among short ones, every one is
    still right."""
    rng = random.Random(8)
    lengths = list(range(65, 73)) * 2 + [rng.choice([0, 3, 8, 20, 40, 64, 65, 72, 130]) for _ in range(40)]
    recs = _records(rng, lengths)
    seed = 3 if hash_ == HASH_CITY else None
    res, _, _, _ = sim_core(recs, hash_, seed, hashes=hashes)
    assert res == [golden(r, hash_, seed) for r in recs]


@pytest.mark.parametrize("hashes,hash_", BUILDS)
def test_core_one_hash_lut_multipliers(hashes, hash_):
    recs = _records(random.Random(9), [2, 7, 12, 30, 50, 64, 72, 140])
    res, _, _, _ = sim_core(recs, hash_, 5 if hash_ == HASH_CITY else None, multipliers="lut", hashes=hashes)
    assert res == [golden(r, hash_, 5 if hash_ == HASH_CITY else None) for r in recs]


@pytest.mark.parametrize("hashes,hash_", BUILDS)
def test_core_one_hash_one_word_per_cycle(hashes, hash_):
    rng = random.Random(10)
    mix = [(0, 17)] * 12 + [(17, 65)] * 2 + [(65, 200)]
    recs = _records(rng, [rng.randrange(*rng.choice(mix)) for _ in range(500)])
    res, when, beats, dut = sim_core(recs, hash_, hashes=hashes)
    assert res == [golden(r, hash_, None) for r in recs]
    last = [i for i, b in enumerate(beats) if b["last"]]
    assert when == [3 + 1 + i + dut.latency for i in last]
    assert len(beats) / (when[-1] - dut.latency - 3) == 1.0


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("hashes,hash_", BUILDS)
def test_core_adder_levels(levels, hashes, hash_):
    """Every ``adder_levels`` builds (the chunk round keeps carry-save stages: it must fit 8
    cycles) and is bit-exact; the shared multipliers follow the trees' depth."""
    recs = _records(random.Random(13), [0, 2, 5, 12, 20, 40, 64, 65, 65, 72, 129, 200])
    res, when, beats, dut = sim_core(recs, hash_, hashes=hashes, adder_levels=levels)
    assert res == [golden(r, hash_, None) for r in recs]
    last = [i for i, b in enumerate(beats) if b["last"]]
    assert when == [3 + 1 + i + dut.latency for i in last]
    assert dut.round_depth == 7


@pytest.mark.parametrize(
    "hashes,units",
    [
        (("farm",), {"rdxz": 1, "rdya": 1, "flm": 4, "s0": 1, "q2m": 1, "s33": 2}),
        (("city",), {"infz": 1, "rdxz": 1, "rdya": 1, "clm": 3, "s0": 1, "q2m": 1, "s33": 1}),
        (
            ("city", "farm"),
            {"infz": 1, "rdxz": 1, "rdya": 1, "flm": 4, "clm": 3, "s0": 1, "q2m": 1, "s33": 2},
        ),
    ],
)
def test_shared_multipliers_per_pool(monkeypatch, hashes, units):
    """The multiplier pipelines each pool of shared products builds: as many as the records'
    spacing needs, no more. (Registering the short paths' picks, one stage more per product,
    spreads a record's products beyond the 5-cycle gap: s0 and s33 then took 2 and 4.)"""
    built: dict[str, int] = {}
    close = hw_cityhash._MulPool.close

    def counting_close(pool):
        built[pool.name] = len(pool.units)
        close(pool)

    monkeypatch.setattr(hw_cityhash._MulPool, "close", counting_close)
    dut = CityFarmCore(hashes=hashes, multipliers="behavioural")
    built.clear()  # the constructor builds scratch pipelines to measure depths
    Fragment.get(dut, None)
    assert built == units


def test_farm_core_has_no_delay_line():
    """FarmHash starts its chunk loop from constants and the first word: a FarmHash-only core
    needs no ring, so its latency is its input register and its finisher's depth alone."""
    farm, both = CityFarmCore(hashes=("farm",)), CityFarmCore()
    farm._MustUse__silence = both._MustUse__silence = True  # built to read attributes only
    assert CityFarmCore.INPUT_STAGE == 1
    assert farm.delay == 0 and farm.latency == 1 + farm.fin_depth
    assert both.latency == 1 + both.span + both.info_depth + 2 + both.fin_depth
    assert farm.span == both.span == 128


@pytest.mark.parametrize("hashes,hash_", [(("farm",), HASH_FARM), (("city",), HASH_CITY)])
def test_lane_one_hash(hashes, hash_):
    rng = random.Random(11)
    keys = [rng.getrandbits(64) for _ in range(12)]
    recs = [k.to_bytes(8, "little") for k in keys]
    seed = 7 if hash_ == HASH_CITY else None
    res, when, dut = sim_lane(keys, 8, HASH_FARM if hash_ == HASH_CITY else HASH_CITY, seed, hashes=hashes)
    assert res == [golden(r, hash_, seed) for r in recs]
    assert when[0] == 3 + 1 + dut.latency
    # FarmHash only: no seed steps, a shorter pipeline
    assert (dut.depth < LANE_DEPTH) == (hash_ == HASH_FARM)


# ------------------------------------------------------------------------------ limits


def _overflow_trace(dut, beats, cycles):
    seen = []

    async def bench(ctx):
        ctx.set(dut.hash, HASH_FARM)
        for b in beats:
            ctx.set(dut.i.valid, b is not None)
            for k, v in (b or {}).items():
                ctx.set(getattr(dut.i.payload, k), v)
            await ctx.tick()
            seen.append(ctx.get(dut.overflow))
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(cycles)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    return seen


def test_core_overflow_flags_records_beyond_max_bytes():
    """A record over ``max_bytes`` (or one whose words are spread over more cycles than that
    many words) cannot have its start state in time: ``overflow`` says so, and stays set."""
    ok = _record_beats(bytes(128))
    spread = [b for w in ok for b in (w, None)]  # 16 words over 32 cycles
    # (the trace holds overflow after each beat's cycle; spread ends with an idle cycle)
    trace = _overflow_trace(CityFarmCore(max_bytes=128, multipliers="behavioural"), ok + spread, 2)
    assert trace == [0] * (len(ok) + len(spread) - 2) + [1, 1]
    too_long = _record_beats(bytes(136))
    trace = _overflow_trace(CityFarmCore(max_bytes=128, multipliers="behavioural"), too_long, 1)
    assert trace == [0] * 16 + [1]


@pytest.mark.parametrize(
    "make,msg",
    [
        (lambda: CityFarmCore(max_bytes=64), "max_bytes must be an int between 65 and 65536, not 64"),
        (lambda: CityFarmCore(max_bytes=True), "max_bytes must be an int between 65 and 65536, not True"),
        (
            lambda: CityFarmCore(multipliers="dsp"),
            "multipliers must be one of 'lut', 'behavioural', not 'dsp'",
        ),
        (lambda: CityFarmLane(latency=3), f"latency must be at least {LANE_DEPTH}, not 3"),
        *[
            (
                lambda h=h, cls=cls: cls(hashes=h),
                f"hashes must be ('city', 'farm'), ('city',) or ('farm',), not {h!r}",
            )
            for cls in (CityFarmCore, CityFarmLane)
            for h in [(), ("md5",), ("city", "city"), "city", ["farm"], ("farm", 1)]
        ],
    ],
)
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_parameter_validation(make, msg):
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        make()


# ------------------------------------------------------------------------------ mutation


def test_equation_check_can_fail(monkeypatch):
    """A wrong constant breaks the equations, in the golden model or in the hardware."""
    recs = _records(random.Random(6), [0, 20, 40, 70])
    good = [farmhash64(r) for r in recs]
    got, _, _, _ = sim_core(recs, HASH_FARM)
    assert got == good
    monkeypatch.setattr(golden_cityhash, "CITY_K1", golden_cityhash.CITY_K1 ^ 2)
    assert got != [farmhash64(r) for r in recs]
    monkeypatch.undo()
    monkeypatch.setattr(hw_cityhash, "CITY_K2", golden_cityhash.CITY_K2 ^ 1 << 40)
    bad, _, _, _ = sim_core(recs, HASH_FARM)
    assert [a != b for a, b in zip(bad, good)] == [True] * len(recs)
    keys = [0x0123456789ABCDEF]
    assert sim_lane(keys, 8, HASH_CITY)[0] != [cityhash64(keys[0].to_bytes(8, "little"))]


@pytest.mark.parametrize("hashes,hash_", BUILDS)
def test_sharing_check_can_fail(monkeypatch, hashes, hash_):
    """The long paths share multipliers and hold registers because records over 64 bytes are 9+
    cycles apart: a core built as if they were 12 apart still hashes long records 13 cycles
    apart right, and gets every one but the last wrong at the closest (so
    test_core_long_records_at_the_closest would catch it): where two records' products meet
    at a shared multiplier's pick, the earlier stage's, the younger record's, passes, so the
    last record loses none of its own."""
    monkeypatch.setattr(hw_cityhash, "LONG_GAP", 12)
    recs = _records(random.Random(12), [65, 65, 65, 72, 72])
    good = [golden(r, hash_, None) for r in recs]
    lone = [b for r in recs for b in _record_beats(r) + [None] * 4]
    dut = CityFarmCore(hashes=hashes, multipliers="behavioural")
    assert run_flow(dut, lone, len(recs), params=params(hash_, None), timeout=dut.latency + 50)[0] == good
    bad, _, _, _ = sim_core(recs, hash_, hashes=hashes)
    assert [a != b for a, b in zip(bad, good)][:-1] == [True] * (len(recs) - 1)
