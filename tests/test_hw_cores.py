"""Each Amaranth core as a plain Python function, checked against the golden model as an equation.

The cores run in the Amaranth simulator; inputs include idle gaps (``None`` beats / random
``valid`` deassertion), backpressure where a core has a ready, and the shared boundary lengths.
"""

from __future__ import annotations

import math
import random
import struct

import pytest
from amaranth.sim import Simulator

from offload import golden
from offload.hw.bucketize import Bucketize
from offload.hw.postproc import FastRange, FidCore, ModPipe, ModReciprocal, mod_by_reciprocal, reciprocal
from offload.hw.simutil import run_flow, run_handshake
from offload.hw.varint import DeltaVarintEncoder
from offload.hw.xxhash import XXH32Core, XXH32Fixed, XXH64Core, XXH64Fixed
from tests.lengths import BOUNDARY_LENGTHS

M64 = golden.MASK64


def _record_beats(rec: bytes):
    n = (len(rec) + 7) // 8
    if n == 0:
        return [dict(data=0, first=1, last=1, empty=1, length=0)]
    return [
        dict(
            data=int.from_bytes(rec[8 * i : 8 * i + 8].ljust(8, b"\0"), "little"),
            first=int(i == 0),
            last=int(i == n - 1),
            empty=0,
            length=len(rec),
        )
        for i in range(n)
    ]


def _with_gaps(beats, rng, gap_prob):
    out = []
    for b in beats:
        while rng.random() < gap_prob:
            out.append(None)
        out.append(b)
    return out


def sim_hash(core_cls, records, seed, gap_prob=0.0, rng=None):
    rng = rng or random.Random(0)
    beats = _with_gaps([b for r in records for b in _record_beats(r)], rng, gap_prob)
    res, _ = run_flow(core_cls(), beats, len(records), params={"seed": seed})
    return res


def sim_xxh64(records, seed=0, **kw):
    return sim_hash(XXH64Core, records, seed, **kw)


def sim_xxh32(records, seed=0, **kw):
    return sim_hash(XXH32Core, records, seed, **kw)


def _records(rng, lengths):
    return [bytes(rng.randrange(256) for _ in range(n)) for n in lengths]


# ------------------------------------------------------------------------------ xxhash


@pytest.mark.parametrize("seed", [0, 0x9E3779B185EBCA87])
def test_xxh64_core_boundary_lengths(seed):
    recs = _records(random.Random(seed & 0xFFFF), BOUNDARY_LENGTHS)
    assert sim_xxh64(recs, seed) == [golden.xxh64(r, seed) for r in recs]


@pytest.mark.parametrize("seed", [0, 0xDEADBEEF])
def test_xxh32_core_boundary_lengths(seed):
    recs = _records(random.Random(seed & 0xFFFF), BOUNDARY_LENGTHS)
    assert sim_xxh32(recs, seed) == [golden.xxh32(r, seed) for r in recs]


def test_xxh_cores_idle_gaps_random_order():
    rng = random.Random(11)
    lengths = BOUNDARY_LENGTHS[:]
    rng.shuffle(lengths)
    recs = _records(rng, lengths[:30])
    seed = rng.getrandbits(64)
    assert sim_xxh64(recs, seed, gap_prob=0.3, rng=rng) == [golden.xxh64(r, seed) for r in recs]
    assert sim_xxh32(recs, seed & 0xFFFFFFFF, gap_prob=0.3, rng=rng) == [
        golden.xxh32(r, seed & 0xFFFFFFFF) for r in recs
    ]


@pytest.mark.parametrize("multipliers", ["lut", "behavioural"])
def test_xxh64_core_shared_rounds_back_to_back(multipliers):
    # Long records share the finaliser's round(0, v) pipeline and records with 2-3 tail words
    # share another (see xxh64_finalize): pack such records as tightly as the stream allows,
    # no gaps: 32-byte records every 4 cycles, 16/24-byte ones every 2/3, mixed with short ones.
    rng = random.Random(7)
    lengths = [32] * 4 + [24] * 4 + [16] * 4 + [56, 8, 40, 1, 32, 31, 23, 17, 33, 0, 63, 24, 16]
    lengths += [rng.choice([0, 1, 8, 9, 16, 17, 24, 31, 32, 33, 40, 48, 56, 64]) for _ in range(40)]
    recs = _records(rng, lengths)
    seed = rng.getrandbits(64)
    beats = [b for r in recs for b in _record_beats(r)]
    res, _ = run_flow(XXH64Core(multipliers=multipliers), beats, len(recs), params={"seed": seed})
    assert res == [golden.xxh64(r, seed) for r in recs]


def test_xxh_sanity_vectors():
    # xxHash's sanity test buffer (xxhsum's sanityBuffer generator) and its known values.
    buf, byte_gen = bytearray(), 2654435761
    for _ in range(101):
        buf.append((byte_gen >> 56) & 0xFF)
        byte_gen = (byte_gen * 11400714785074694797) & M64
    recs = [bytes(buf[:n]) for n in (0, 1, 14, 100)]
    got = sim_xxh64(recs, 0)
    assert got[0] == 0xEF46DB3751D8E999 == golden.xxh64(b"", 0)
    assert got == [golden.xxh64(r, 0) for r in recs]


@pytest.mark.parametrize("key_bytes", [4, 8])
def test_fixed_cores_one_key_per_cycle(key_bytes):
    rng = random.Random(key_bytes)
    keys = [rng.getrandbits(8 * key_bytes) for _ in range(24)] + [0, (1 << 8 * key_bytes) - 1]
    seed64, seed32 = rng.getrandbits(64), rng.getrandbits(32)
    res, when = run_flow(XXH64Fixed(key_bytes), keys, len(keys), params={"seed": seed64})
    assert res == [golden.xxh64(k.to_bytes(key_bytes, "little"), seed64) for k in keys]
    assert when == list(range(when[0], when[0] + len(keys)))  # one result per cycle
    res, _ = run_flow(XXH32Fixed(key_bytes), keys, len(keys), params={"seed": seed32})
    assert res == [golden.xxh32(k.to_bytes(key_bytes, "little"), seed32) for k in keys]


def test_record_core_throughput_one_word_per_cycle():
    recs = _records(random.Random(3), [8] * 20)
    beats = [b for r in recs for b in _record_beats(r)]
    res, when = run_flow(XXH64Core(), beats, len(recs), params={"seed": 1})
    assert when == list(range(when[0], when[0] + len(recs)))
    assert res == [golden.xxh64(r, 1) for r in recs]


# ------------------------------------------------------------------------------ post-processing

HASHES = [0, 1, M64, 1 << 63, (1 << 63) - 1] + [random.Random(5).getrandbits(64) for _ in range(15)]


def sim_mod(hs, n, bits_per_stage=1):
    return run_flow(ModPipe(bits_per_stage), hs, len(hs), params={"num_buckets": n})[0]


def sim_mod_reciprocal(hs, n, settle=ModReciprocal.setup):
    """``ModReciprocal`` with ``num_buckets`` set ``settle`` cycles before the first value."""
    return run_flow(ModReciprocal(), hs, len(hs), params={"num_buckets": n}, settle=settle)[0]


def sim_fastrange(hs, n):
    return run_flow(FastRange(), hs, len(hs), params={"num_buckets": n})[0]


@pytest.mark.parametrize("n", [1, 2, 3, 1000, 12345678901234567, (1 << 63) - 1, 1 << 63])
def test_mod_and_fastrange(n):
    assert sim_mod(HASHES, n) == [h % n for h in HASHES]
    assert sim_mod_reciprocal(HASHES, n) == [h % n for h in HASHES]
    assert sim_fastrange(HASHES, n) == [golden.fastrange64(h, n) for h in HASHES]


def test_mod_bits_per_stage_option():
    n = 0xFFFF_FFFF_FFFF_FFC5
    assert sim_mod(HASHES, n, 2) == [h % n for h in HASHES]
    assert (ModPipe(1).latency, ModPipe(2).latency) == (65, 33)  # the knob buys latency


def test_hash_bucket_composed():
    recs = _records(random.Random(8), [0, 4, 8, 33])
    hs = sim_xxh64(recs, 3)
    assert sim_mod(hs, 97) == [golden.hash_bucket(r, 97, 3, "mod") for r in recs]
    assert sim_mod_reciprocal(hs, 97) == [golden.hash_bucket(r, 97, 3, "mod") for r in recs]
    assert sim_fastrange(hs, 97) == [golden.hash_bucket(r, 97, 3, "fastrange") for r in recs]


@pytest.mark.parametrize("version,slot", [(1, 0), (1, 1023), (2, 7), (2, 32767)])
def test_fid_core(version, slot):
    recs = _records(random.Random(slot), [1, 8, 40])
    hs = [golden.xxh64(r, 0) for r in recs]
    res, _ = run_flow(FidCore(), hs, len(hs), params={"slot": slot, "version": version})
    assert res == [golden.fid(r, slot, version, 0) for r in recs]
    assert all(r >> 63 == 0 for r in res) or version == 1


# Divisors at the edges of the radix-2**b stages: the smallest, powers of two and their
# neighbours (quotient digits all 0 or all 2**b - 1), around 2**63 (the top bit of n, where
# R - k*n needs the extra bits) and 2**64 - 1; plus random full-width and short ones.
MOD_NS = (
    [1, 2, 3, 5, 15, 16, 17, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, M64 - 1, M64]
    + [random.Random(6).getrandbits(64) for _ in range(3)]
    + [random.Random(7).getrandbits(k) | 1 << (k - 1) for k in (7, 33, 50)]
)
EDGE_HASHES = HASHES + [2, 3, M64 - 1, (1 << 63) + 1, 1 << 32, (1 << 32) - 1]


@pytest.mark.parametrize("bits_per_stage", [1, 2])
def test_mod_every_radix_edge_divisors(bits_per_stage):
    for n in MOD_NS:
        assert sim_mod(EDGE_HASHES, n, bits_per_stage) == [h % n for h in EDGE_HASHES], n


def test_mod_reciprocal_edge_divisors():
    for n in MOD_NS + [0]:
        assert sim_mod_reciprocal(EDGE_HASHES, n) == [h % n if n else h for h in EDGE_HASHES], n


def test_reciprocal_model_is_barrett_exact():
    """The model of ModReciprocal's steps: ``m`` is the documented reciprocal, and the one
    correction suffices for every divisor shape (all 64 bit lengths, powers of two and their
    neighbours, random) on values at and around multiples of ``n``."""
    rng = random.Random(12)
    ns = (
        [1 << k for k in range(64)]
        + [(1 << k) + 1 for k in range(64)]
        + [(1 << k) - 1 for k in range(2, 65)]
        + [rng.getrandbits(rng.randint(1, 64)) | 1 for _ in range(400)]
    )
    for n in ns:
        m, s = reciprocal(n)
        assert n << s >> 63 == 1 and n << s < 1 << 64
        assert m == ((1 << (127 - s)) - 1) // n < 1 << 64
        xs = [0, 1, M64, M64 - 1, rng.getrandbits(64)]
        xs += [v for k in (1, 2, rng.getrandbits(20)) for d in (-1, 0, 1) if 0 <= (v := n * k + d) <= M64]
        assert [mod_by_reciprocal(x, n) for x in xs] == [x % n for x in xs], n
    with pytest.raises(ValueError, match=r"^n must be between 1 and 2\*\*64 - 1, not 0$"):
        reciprocal(0)


def test_mod_reciprocal_setup_is_exact():
    """``setup`` is the exact wait after ``num_buckets`` is set: a cycle less and values near
    2**64 use a reciprocal still being computed; a change between two groups of values, with
    ``setup`` idle cycles in between, gives each group its own divisor."""
    hs = [M64, M64 - 1, 12345]
    assert sim_mod_reciprocal(hs, 3) == [h % 3 for h in hs]
    assert sim_mod_reciprocal(hs, 3, settle=ModReciprocal.setup - 1) != [h % 3 for h in hs]
    dut = ModReciprocal()
    got = []

    async def bench(ctx):
        for n in (7, (1 << 63) + 5, 1):
            ctx.set(dut.num_buckets, n)
            ctx.set(dut.i.valid, 0)
            await ctx.tick().repeat(ModReciprocal.setup)
            for h in hs:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, h)
                await ctx.tick()
            ctx.set(dut.i.valid, 0)
            await ctx.tick().repeat(dut.latency + 1)

    async def collect(ctx):
        async for _clk, _rst, valid, payload in ctx.tick().sample(dut.o.valid, dut.o.payload):
            if valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(collect, background=True)
    sim.run()
    assert got == [h % n for n in (7, (1 << 63) + 5, 1) for h in hs]


def test_fastrange_edge_values():
    for n in [0, 1, 2, M64, M64 - 1, 1 << 63, (1 << 63) - 1] + MOD_NS[-6:]:
        assert sim_fastrange(EDGE_HASHES, n) == [golden.fastrange64(h, n) for h in EDGE_HASHES], n


@pytest.mark.parametrize(
    "make,params",
    [
        (lambda: ModPipe(1), {"num_buckets": 7}),
        (lambda: ModPipe(2), {"num_buckets": 7}),
        (ModReciprocal, {"num_buckets": 7}),
        (FastRange, {"num_buckets": 7}),
        (FidCore, {"slot": 3, "version": 2}),
    ],
)
def test_postproc_latency_attribute_is_exact(make, params):
    """The engine sizes its credit from ``.latency``: a value entering at cycle t leaves at
    t + latency, one per cycle, idle cycles preserved."""
    dut = make()
    beats = [5, 6, None, 7, None, None, 8]
    settle = getattr(dut, "setup", 3)
    res, when = run_flow(dut, beats, 4, params=params, settle=settle)
    entered = [i for i, b in enumerate(beats) if b is not None]
    assert when == [settle + 1 + dut.latency + i for i in entered]
    if "num_buckets" in params:
        assert res == [b % 7 for b in beats if b is not None] or isinstance(dut, FastRange)


# ------------------------------------------------------------------------------ bucketize


def _f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


ENC = {
    0: lambda v: v & M64,
    1: lambda v: v & M64,
    2: lambda v: struct.unpack("<I", struct.pack("<f", v))[0],
    3: lambda v: struct.unpack("<Q", struct.pack("<d", v))[0],
}
XENC = dict(ENC)
XENC[0] = lambda v: v & 0xFFFF_FFFF  # FIXED4: the low 4 bytes


def sim_bucketize(xs, boundaries, dtype, right=True, table_depth=16, dut=None, monitor=None):
    dut = Bucketize(table_depth) if dut is None else dut

    async def load(ctx):
        for i, b in enumerate(boundaries):
            ctx.set(dut.table_addr, i)
            ctx.set(dut.table_data, ENC[dtype](b))
            ctx.set(dut.table_we, 1)
            await ctx.tick()
        ctx.set(dut.table_we, 0)

    return run_flow(
        dut,
        [XENC[dtype](x) for x in xs],
        len(xs),
        pre=load,
        monitor=monitor,
        params={"dtype": dtype, "right": int(right), "num_boundaries": len(boundaries)},
    )[0]


FLOATS = [-math.inf, -1e30, -2.5, -1.0, -0.0, 0.0, 1e-30, 0.5, 1.0, 2.5, 1e30, math.inf]


@pytest.mark.parametrize("dtype", [0, 1, 2, 3])
@pytest.mark.parametrize("right", [True, False])
def test_bucketize(dtype, right):
    rng = random.Random(dtype * 2 + right)
    if dtype in (0, 1):
        lim = 1 << (31 if dtype == 0 else 63)
        bounds = sorted(set(rng.randrange(-lim, lim) for _ in range(9)) | {-lim, 0, lim - 1})
        xs = bounds + [rng.randrange(-lim, lim) for _ in range(8)] + [-1, 1]
    else:
        conv = _f32 if dtype == 2 else float
        bounds = sorted({conv(x) for x in (-1e30, -2.5, -0.0, 1.0, 2.5, math.inf)})
        if rng.random() < 2:
            bounds[bounds.index(0.0)] = -0.0  # -0.0 boundary equals 0.0
        xs = [conv(x) for x in FLOATS] + [math.nan, -math.nan, conv(0.75)]
    assert sim_bucketize(xs, bounds, dtype, right) == [golden.bucketize(x, bounds, right) for x in xs]


@pytest.mark.parametrize("depth,n", [(1, 0), (1, 1), (2, 2), (16, 16), (16, 5)])
def test_bucketize_table_sizes(depth, n):
    bounds = list(range(-3 * n, 0, 3))[:n]
    xs = list(range(-3 * n - 2, 3))
    for right in (True, False):
        assert sim_bucketize(xs, bounds, 1, right, depth) == [golden.bucketize(x, bounds, right) for x in xs]


@pytest.mark.parametrize("depth", [4, 256])
@pytest.mark.parametrize("dtype", [1, 3])
def test_bucketize_deep_tables(depth, dtype):
    """Every step of the binary search (the address bits are OR-ed in, not added): a full
    table, a part-full one, and x below, between, on and above every boundary."""
    rng = random.Random(depth + dtype)
    for n in sorted({depth, depth - 1, depth // 2 + 1, 1}):
        if dtype == 1:
            bounds = sorted({rng.randrange(-(1 << 62), 1 << 62) for _ in range(n)})
            xs = bounds + [b + 1 for b in bounds] + [b - 1 for b in bounds] + [-(1 << 63), M64 >> 1]
        else:
            bounds = sorted({rng.uniform(-1e6, 1e6) for _ in range(n)})
            xs = (
                bounds
                + [math.nextafter(b, math.inf) for b in bounds]
                + [-math.inf, math.inf, math.nan, -0.0, 0.0]
            )
        xs = rng.sample(xs, min(len(xs), 40))
        for right in (True, False):
            assert sim_bucketize(xs, bounds, dtype, right, depth) == [
                golden.bucketize(x, bounds, right) for x in xs
            ], (n, right)


@pytest.mark.parametrize("dtype", [2, 3])
def test_bucketize_signed_zero_boundaries(dtype):
    """A -0.0 or +0.0 boundary against x = ±0.0 and the values right next to zero (the
    hardware places ±0.0 x keys by ``right`` instead of mapping -0.0 boundaries)."""
    tiny = 1e-45 if dtype == 2 else 5e-324  # the smallest subnormals
    conv = _f32 if dtype == 2 else float
    xs = [conv(x) for x in (-0.0, 0.0, -tiny, tiny, -1.0, 1.0, -math.inf, math.inf)] + [math.nan]
    for zero in (-0.0, 0.0):
        for bounds in ([zero], [conv(-tiny), zero, conv(tiny)], [-1.0, zero, 1.0]):
            for right in (True, False):
                assert sim_bucketize(xs, bounds, dtype, right) == [
                    golden.bucketize(x, bounds, right) for x in xs
                ], (bounds, right)


def test_bucketize_latency_attribute_is_exact():
    dut = Bucketize(16)
    bounds = [1, 5, 9]

    async def load(ctx):
        for i, b in enumerate(bounds):
            ctx.set(dut.table_addr, i)
            ctx.set(dut.table_data, b)
            ctx.set(dut.table_we, 1)
            await ctx.tick()
        ctx.set(dut.table_we, 0)

    res, when = run_flow(
        dut, [0, 6, None, 10], 3, pre=load, settle=3, params={"dtype": 1, "right": 1, "num_boundaries": 3}
    )
    assert res == [0, 2, 3]
    assert when == [len(bounds) + 3 + 1 + dut.latency + i for i in (0, 1, 3)]


# ------------------------------------------------------------------------------ delta varint


def sim_delta_encode(seqs, valid_prob=1.0, rng=None):
    beats = []
    for s in seqs:
        if not s:
            beats.append(dict(data=0, first=1, last=1, empty=1))
        for i, v in enumerate(s):
            beats.append(dict(data=v & M64, first=int(i == 0), last=int(i == len(s) - 1), empty=0))
    res, stats = run_handshake(
        DeltaVarintEncoder(),
        beats,
        1 << 30,
        valid_prob=valid_prob,
        rng=rng or random.Random(0),
        timeout=300,
        done=lambda r: sum(int(x.header) for x in r) == len(seqs),
    )
    out, cur = [], b""
    for r in res:
        if r.header:
            b = int(r.data)
            assert len(cur) == (b + 7) // 8 * 8 and not any(cur[b:])
            out.append(cur[:b])
            cur = b""
        else:
            cur += int(r.data).to_bytes(8, "little")
    return out, stats


def test_delta_varint_encoder():
    rng = random.Random(21)
    seqs = [
        [],
        [0],
        [1, 2, 3],
        [-1],
        [(1 << 63) - 1, -(1 << 63), 5, -(1 << 63)],
        [rng.randrange(-(1 << 63), 1 << 63) for _ in range(9)],
        [rng.randrange(-300, 300) for _ in range(25)],
        [7] * 33,
    ]
    for vp in (1.0, 0.6):
        out, _ = sim_delta_encode(seqs, vp, rng)
        assert out == [golden.delta_varint_encode_seq(s) for s in seqs]


def _wide_deltas(rng, n):
    """A sequence whose deltas take 9 or 10 LEB128 bytes: the buffer fills to every level up to
    its room limit (a value is taken at 22 bytes buffered, never at 23 or 24)."""
    v, out = 0, []
    for _ in range(n):
        z = rng.randrange(1 << 56, 1 << 63) if rng.random() < 0.3 else rng.randrange(1 << 63, 1 << 64)
        v = (v + golden.unzigzag64(z)) & M64
        out.append(v - (1 << 64) if v >> 63 else v)
    return out


def test_delta_varint_encoder_buffer_room():
    rng = random.Random(5)
    seqs = [_wide_deltas(rng, n) for n in (1, 2, 3, 17, 40, 64)]
    assert all(len(golden.delta_varint_encode_seq(s)) >= 9 * len(s) for s in seqs)
    for vp in (1.0, 0.7):
        out, _ = sim_delta_encode(seqs, vp, rng)
        assert out == [golden.delta_varint_encode_seq(s) for s in seqs]


def test_delta_varint_small_values_one_per_cycle():
    seq = list(range(0, 2000, 37))  # deltas of 1 byte
    out, stats = sim_delta_encode([seq])
    assert out == [golden.delta_varint_encode_seq(seq)]
    assert stats["accepted"] == len(seq) and stats["cycles"] - len(seq) <= 8


# ------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize(
    "cls,kw,msg",
    [
        (Bucketize, dict(table_depth=3), "table_depth must be a power of two between 1 and 4096, not 3"),
        (
            Bucketize,
            dict(table_depth=8192),
            "table_depth must be a power of two between 1 and 4096, not 8192",
        ),
        (ModPipe, dict(bits_per_stage=3), r"bits_per_stage must be one of 1, 2, not 3"),
        (XXH64Fixed, dict(key_bytes=2), r"key_bytes must be one of 4, 8, not 2"),
        (XXH32Fixed, dict(key_bytes=16), r"key_bytes must be one of 4, 8, not 16"),
    ],
)
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_core_parameter_validation(cls, kw, msg):
    with pytest.raises(ValueError, match="^" + msg.replace("(", r"\(") + "$"):
        cls(**kw)


# ------------------------------------------------------------------------------ mutation


def test_equation_check_can_fail(monkeypatch):
    """A corrupted golden (a prime off by one) or a flipped expected bit breaks the equations:
    the checks above are able to fail."""
    recs = _records(random.Random(1), [0, 5, 8, 40])
    got = sim_xxh64(recs, 0)
    assert got == [golden.xxh64(r, 0) for r in recs]
    flipped = [h ^ 1 for h in (golden.xxh64(r, 0) for r in recs)]
    assert got != flipped
    bad = (golden.XXH64_PRIMES[0] ^ 2,) + golden.XXH64_PRIMES[1:]
    monkeypatch.setattr(golden, "XXH64_PRIMES", bad)
    assert got != [golden.xxh64(r, 0) for r in recs]
    got_mod = sim_mod(HASHES[:4], 1000)
    assert got_mod != [(h % 1000) ^ 1 for h in HASHES[:4]]
