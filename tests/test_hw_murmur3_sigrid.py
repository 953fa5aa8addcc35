"""The Murmur3 and SigridHash cores as plain Python functions, checked against the golden models
(:mod:`offload.golden_murmur3`, :mod:`offload.golden_sigrid`) as equations in the Amaranth
simulator.

The record core takes its seed on a record's first beat and its tail on the last, so one run
interleaves every (length, tail, seed) combination, with random values on the ports at every
other beat (they must be ignored there) and with idle gaps. The cores are flow-through (input
always ready, output always taken: no ``ready`` to deassert), so backpressure does not apply;
idle gaps are the crossing. ``multipliers="lut"`` is what is synthesised; the behavioural
flavour is cycle-identical by construction and runs the long streams.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from amaranth.sim import Simulator

from offload.golden_murmur3 import murmur3_32
from offload.golden_sigrid import INT64_MAX, INT64_MIN, sigrid_hash
from offload.hw import murmur3 as hw_murmur3
from offload.hw import sigrid as hw_sigrid
from offload.hw.murmur3 import Murmur3Core, Murmur3Lane
from offload.hw.sigrid import SigridCore
from offload.hw.simutil import CLOCK_PERIOD, run_flow, set_payload
from tests.lengths import BOUNDARY_LENGTHS

M32 = (1 << 32) - 1
M64 = (1 << 64) - 1
SEEDS = [0, 42, M32]
TAILS = ["standard", "spark"]
#: every length 0..70 (both blocks of a word, every tail shape, 1..8 words), the shared
#: boundary lengths and a few longer ones
LENGTHS = sorted(set(range(71)) | set(BOUNDARY_LENGTHS) | {255, 256, 257})

Record = tuple[bytes, int, str]  # data, seed, tail


def lane_depth() -> int:
    """The lane's unpadded pipeline depth (read from a lane built only for it)."""
    lane = Murmur3Lane(99)
    lane._MustUse__silence = True
    return lane.depth


def _beats(data: bytes) -> list[dict[str, int]]:
    n = (len(data) + 7) // 8
    if n == 0:
        return [dict(data=0, first=1, last=1, empty=1, length=0)]
    return [
        dict(
            data=int.from_bytes(data[8 * i : 8 * i + 8].ljust(8, b"\0"), "little"),
            first=int(i == 0),
            last=int(i == n - 1),
            empty=0,
            length=len(data),
        )
        for i in range(n)
    ]


def sim_murmur3(
    records: Sequence[Record], *, gap_prob: float = 0.0, multipliers: str = "behavioural", core=None
) -> tuple[list[int], list[int]]:
    """Hash ``records`` on a :class:`Murmur3Core`: returns (results, the cycle of each result,
    counted from the first beat). Seeds are set on first beats, tails on last beats, random
    values on the ports everywhere else; ``gap_prob``: idle cycles between beats."""
    dut = core or Murmur3Core(multipliers=multipliers)
    rng = random.Random(len(records))
    results: list[int] = []
    when: list[int] = []

    async def driver(ctx):
        await ctx.tick().repeat(2)
        for data, seed, tail in records:
            for b in _beats(data):
                while rng.random() < gap_prob:
                    ctx.set(dut.i.valid, 0)
                    ctx.set(dut.seed, rng.getrandbits(32))
                    ctx.set(dut.spark_tail, rng.getrandbits(1))
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                set_payload(ctx, dut.i.payload, b)
                ctx.set(dut.seed, seed if b["first"] else rng.getrandbits(32))
                ctx.set(dut.spark_tail, int(tail == "spark") if b["last"] else rng.getrandbits(1))
                await ctx.tick()
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(dut.latency + 2)

    async def collect(ctx):
        cycle = -2
        async for _clk, _rst, valid, payload in ctx.tick().sample(dut.o.valid, dut.o.payload):
            cycle += 1
            if valid:
                results.append(payload)
                when.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(driver)
    sim.add_testbench(collect, background=True)
    sim.run()
    return results, when


def golden_murmur3(records: Sequence[Record]) -> list[int]:
    return [murmur3_32(data, seed, tail) for data, seed, tail in records]


def _crossed(rng: random.Random, lengths: Sequence[int]) -> list[Record]:
    """Every length with every tail and seed, in a random order."""
    recs = [(rng.randbytes(n), s, t) for n in lengths for t in TAILS for s in SEEDS]
    rng.shuffle(recs)
    return recs


# ------------------------------------------------------------------------------ Murmur3Core


def test_murmur3_core_every_length_tail_and_seed_lut():
    recs = _crossed(random.Random(1), LENGTHS)
    got, _ = sim_murmur3(recs, multipliers="lut")
    assert got == golden_murmur3(recs)


@pytest.mark.parametrize("gap_prob,lengths", [(0.3, BOUNDARY_LENGTHS), (0.8, list(range(18)) + [63, 64, 65])])
def test_murmur3_core_idle_gaps(gap_prob, lengths):
    recs = _crossed(random.Random(2), lengths)
    got, _ = sim_murmur3(recs, gap_prob=gap_prob)
    assert got == golden_murmur3(recs)


def test_murmur3_core_spark_tail_sign_extends_bytes():
    # Bytes >= 0x80 are where the tails (and a zero- instead of sign-extension) differ.
    recs = [(bytes([0x80 + i] * n), 42, t) for i, n in enumerate(range(1, 12)) for t in TAILS]
    got, _ = sim_murmur3(recs, multipliers="lut")
    assert got == golden_murmur3(recs)
    assert got[0::2] != got[1::2]  # standard != spark wherever the length is not a multiple of 4


def test_murmur3_core_latency_and_one_record_per_cycle():
    recs = [(bytes([i]) * (i % 9), 7, TAILS[i % 2]) for i in range(40)]  # one word each
    core = Murmur3Core(multipliers="lut")
    got, when = sim_murmur3(recs, core=core)
    assert got == golden_murmur3(recs)
    assert when == [core.latency + 1 + i for i in range(len(recs))]  # beat i at cycle i + 1


def test_murmur3_core_words_per_cycle_random_mix():
    """Back-to-back records of a random length mix: the core takes one input word (beat) per
    cycle, so the results of N beats arrive in N cycles after the pipeline's latency."""
    rng = random.Random(3)
    lengths = [rng.randrange(0, 71) if rng.random() < 0.9 else rng.randrange(71, 200) for _ in range(2000)]
    recs = [(rng.randbytes(n), rng.choice(SEEDS), rng.choice(TAILS)) for n in lengths]
    core = Murmur3Core()
    got, when = sim_murmur3(recs, core=core)
    assert got == golden_murmur3(recs)
    beats = sum(len(_beats(d)) for d, _, _ in recs)
    cycles = when[-1] - core.latency  # from the first beat (cycle 1) to the last one
    words_per_cycle = beats / cycles
    print(f"Murmur3Core: {len(recs)} records, {beats} words in {cycles} cycles: {words_per_cycle:.4f}/cycle")
    assert words_per_cycle >= 0.95
    assert words_per_cycle == 1.0


# ------------------------------------------------------------------------------ Murmur3Lane


@pytest.mark.parametrize("key_bytes", [4, 8])
def test_murmur3_lane_one_key_per_cycle(key_bytes):
    rng = random.Random(key_bytes)
    keys = [0, (1 << 8 * key_bytes) - 1, 1 << (8 * key_bytes - 1)] + [
        rng.getrandbits(8 * key_bytes) for _ in range(20)
    ]
    for seed in SEEDS:
        lane = Murmur3Lane(lane_depth() + 2)
        words = [k | rng.getrandbits(32) << 32 if key_bytes == 4 else k for k in keys]  # high half ignored
        got, when = run_flow(lane, words, len(keys), params={"seed": seed, "key8": int(key_bytes == 8)})
        assert got == [murmur3_32(k.to_bytes(key_bytes, "little"), seed) for k in keys]
        assert when == list(range(when[0], when[0] + len(keys)))


def test_murmur3_lane_latency_is_the_parameter():
    keys = list(range(5))
    for latency in (lane_depth(), 30):
        _, when = run_flow(Murmur3Lane(latency, multipliers="behavioural"), keys, 5, params={"key8": 1})
        assert when[0] == 3 + 1 + latency  # settle 3, the beat's own cycle, then the latency


# ------------------------------------------------------------------------------ SigridCore

IDS = [0, 1, -1, 2, INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1] + [
    random.Random(4).getrandbits(64) + INT64_MIN for _ in range(12)
]
MAX_VALUES = [1, 2, 3, 100, 1 << 32, INT64_MAX - 1, INT64_MAX]


def sim_sigrid(ids: Sequence[int], salt: int, max_value: int, **kw) -> list[int]:
    core = SigridCore(**kw)
    params = {"salt": salt & M64, "max_value": max_value}
    return run_flow(core, [i & M64 for i in ids], len(ids), params=params)[0]


@pytest.mark.parametrize("max_value", MAX_VALUES)
def test_sigrid_core_edge_ids_salts_max_values(max_value):
    for salt in (0, -1, INT64_MIN, INT64_MAX, 42):
        got = sim_sigrid(IDS, salt, max_value, multipliers="behavioural")
        assert got == [sigrid_hash(i, salt, max_value) for i in IDS]


@pytest.mark.parametrize("max_value,bits_per_stage", [(100, 1), (INT64_MAX, 1), (2, 2), (12345678901, 2)])
def test_sigrid_core_lut(max_value, bits_per_stage):
    salt = -0x1234_5678_9ABC
    got = sim_sigrid(IDS, salt, max_value, bits_per_stage=bits_per_stage)
    assert got == [sigrid_hash(i, salt, max_value) for i in IDS]


def test_sigrid_core_torcharrow_vector_and_one_id_per_cycle():
    # TorchArrow's unit test: salt 0, max_value 100, ids 0..15 (offload.golden_sigrid docstring).
    core = SigridCore()
    got, when = run_flow(core, list(range(16)), 16, params={"salt": 0, "max_value": 100})
    assert got == [6, 60, 54, 54, 9, 4, 91, 11, 67, 79, 2, 25, 92, 98, 83, 66]
    assert when == [3 + 1 + core.latency + i for i in range(16)]


def test_sigrid_core_negative_hashes_take_the_floor_modulo():
    # Ids whose raw hash is negative: the floor modulo differs from C's truncated one there.
    from offload.golden_sigrid import sigrid_hash_raw

    neg = [i for i in range(200) if sigrid_hash_raw(i, 5) < 0][:10]
    assert len(neg) == 10
    got = sim_sigrid(neg, 5, 97, multipliers="behavioural")
    assert got == [sigrid_hash(i, 5, 97) for i in neg]
    # not the unsigned remainder of the bit pattern (a core without the sign fold)
    assert got != [(sigrid_hash_raw(i, 5) & M64) % 97 for i in neg]


# ------------------------------------------------------------------------------ errors


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match=r"adder_levels must be one of 1, 2, 'csa', not 3"):
        Murmur3Core(adder_levels=3)
    with pytest.raises(ValueError, match=r"multipliers must be one of 'lut', 'behavioural', not 'dsp'"):
        SigridCore(multipliers="dsp")
    with pytest.raises(ValueError, match=r"bits_per_stage must be one of 1, 2, not 4"):
        SigridCore(bits_per_stage=4)
    depth = lane_depth()
    with pytest.raises(ValueError, match=rf"latency must be at least {depth}, not {depth - 1}"):
        Murmur3Lane(depth - 1)


# ------------------------------------------------------------------------------ mutation


@pytest.mark.parametrize(
    "name", ["MURMUR3_C1", "MURMUR3_C2", "MURMUR3_H_ADD", "MURMUR3_FMIX1", "MURMUR3_FMIX2", "ROT_H1"]
)
def test_murmur3_mutated_constant_fails_the_equations(monkeypatch, name):
    """A core built with one constant wrong disagrees with the golden model: the equations
    above are able to fail."""
    recs = _crossed(random.Random(5), [3, 8, 13])
    good, _ = sim_murmur3(recs)
    assert good == golden_murmur3(recs)
    monkeypatch.setattr(hw_murmur3, name, getattr(hw_murmur3, name) ^ 4)
    bad, _ = sim_murmur3(recs)
    assert bad != golden_murmur3(recs)


def test_murmur3_mutated_spark_table_fails_the_equations(monkeypatch):
    table = hw_murmur3.spark_byte_table()
    monkeypatch.setattr(hw_murmur3, "spark_byte_table", lambda: table[:255] + [table[255] ^ 1])
    recs = [(b"\xff", 0, "spark")]
    assert sim_murmur3(recs)[0] != golden_murmur3(recs)


@pytest.mark.parametrize("name", ["HASH128_KMUL", "HASH128_SHIFT", "TWANG_STEPS"])
def test_sigrid_mutated_constant_fails_the_equations(monkeypatch, name):
    value = getattr(hw_sigrid, name)
    if name == "TWANG_STEPS":
        value = ((0, (1 << 21) - 1, 0),) + value[1:]  # the "- 1" of ~key + (key << 21) lost
    else:
        value ^= 2
    monkeypatch.setattr(hw_sigrid, name, value)
    got = sim_sigrid(IDS, 7, INT64_MAX, multipliers="behavioural")
    assert got != [sigrid_hash(i, 7, INT64_MAX) for i in IDS]
