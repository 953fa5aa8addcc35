"""The wide engine (``OffloadEngine(lanes=N)``, N words per AXI-Stream beat) against golden.

Every batch is checked against :func:`offload.wire.reference_engine` (the executable model of
docs/wire_format.md on the golden models) on the *byte stream*: the words whose ``tkeep`` is set,
in order. The output must be packed: N words per beat, the trailer (with ``tlast``) in the last
beat, the words after it zero with ``tkeep`` clear. VAR and SEQ batches must also give exactly
the 64-bit engine's result. Elaborating an engine in the simulator takes seconds, so each bus
width runs its batches in one simulation (module fixtures) and the tests check parts of it.
"""

from __future__ import annotations

import functools
import random
import struct

import numpy as np
import pytest

from offload import engine_map, golden
from offload.hw.engine import ERR, OffloadEngine
from offload.hw.enginesim import Batch, beats_of, pack_seq, pack_var, run_batches, trailer_fields
from offload.hw.lanes import XXH32Lane, XXH64Lane
from offload.hw.simutil import run_flow
from offload.hw.xxhash import XXH32Core, XXH64Core
from offload.wire import reference_engine

#: An op code no operator has.
_UNKNOWN_OP = max(engine_map.OP_CODES.values()) + 1

# One worker for the module, so each width's simulation (a minute or more) runs once: pytest may
# set a parametrised module fixture up again when a worker's tests for a width are not adjacent.
pytestmark = pytest.mark.xdist_group("engine_lanes")

M64 = golden.MASK64
MAGIC = 0x0FF1
TABLE_DEPTH = 16
SEQ_MAX = 64
E = {k: 1 << v for k, v in ERR.items()}
WIDE = (2, 4)


def _engine(lanes: int) -> OffloadEngine:
    """The smallest FIFO the engine accepts for ``lanes`` (so backpressure reaches the credit
    limit quickly); it follows the cores' latencies."""
    depth = 256
    while True:
        try:
            return OffloadEngine(table_depth=TABLE_DEPTH, fifo_depth=depth, seq_max=SEQ_MAX, lanes=lanes)
        except ValueError:
            depth *= 2


def _regs(op, fmt, count, seed=0, **kw):
    return dict(OP=op, FORMAT=fmt, COUNT=count, SEED_LO=seed & 0xFFFF_FFFF, SEED_HI=seed >> 32, **kw)


def _f32(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _f64(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def _stream_words(b: Batch, lanes: int) -> list[int]:
    """The byte stream of a batch's beats as words (the words whose tkeep is set)."""
    out = []
    for data, keep, _last in beats_of(b, lanes):
        n = max([j + 1 for j in range(lanes) if (keep >> (8 * j)) & 0xFF] + [1])
        out += [(data >> (64 * j)) & M64 for j in range(n)]
    return out


def _reference(b: Batch, lanes: int):
    table = np.zeros(TABLE_DEPTH, np.uint64)
    if b.table:
        table[: len(b.table)] = b.table
    out, err = reference_engine(
        b.regs, table, np.array(_stream_words(b, lanes), np.uint64), table_depth=TABLE_DEPTH, seq_max=SEQ_MAX
    )
    return [int(x) for x in out], int(err)


def _check_packing(res, lanes: int) -> None:
    """N words per beat; the trailer last, alone with tlast; the words after it zero, tkeep clear."""
    assert res.beats and res.beats[-1][2] == 1 and sum(last for _, _, last in res.beats) == 1
    full = (1 << (8 * lanes)) - 1
    for _, keep, _ in res.beats[:-1]:
        assert keep == full
    data, keep, _ = res.beats[-1]
    n = (len(res.out) - 1) % lanes + 1  # words in the last beat (trailer included)
    assert keep == (1 << (8 * n)) - 1
    assert data >> (64 * n) == 0


# ---------------------------------------------------------------------------------------------
# The batches (one list per bus width; names index the results)
# ---------------------------------------------------------------------------------------------

SEED = 0x0123_4567_89AB_CDEF
NB = 12345678901


def _hash_batches(lanes: int, rng: random.Random) -> dict[str, Batch]:
    """Every hash OP with FIXED8 and FIXED4; counts 0, 1, N-1, N, N+1 and larger ones."""
    out = {}
    counts = sorted({1, lanes - 1, lanes, lanes + 1, 2 * lanes + 3, 23})
    extra = dict(NUM_BUCKETS_LO=NB & 0xFFFF_FFFF, NUM_BUCKETS_HI=NB >> 32)
    i = 0
    for op in range(1, 7):
        slot = {5: 1000, 6: 30000}.get(op, 0)
        for fmt in (0, 1):
            n = counts[i % len(counts)]
            i += 1
            keys = [rng.getrandbits(64 if fmt == 0 else 32) for _ in range(n)]
            out[f"op{op}_fmt{fmt}_n{n}"] = Batch(_regs(op, fmt, n, SEED, SLOT=slot, **extra), keys)
    for n in [0] + counts:  # the count sweep on xxh64/FIXED8
        keys = [rng.getrandbits(64) for _ in range(n)] + ([0, M64] if n == 23 else [])
        out[f"count_{n}"] = Batch(_regs(2, 0, len(keys), SEED), keys)
    return out


BUCKETIZE_CASES = {  # dtype: (format, boundaries, xs, encoder of a boundary, encoder of x)
    0: (
        1,
        [-5, 0, 7, 2**31 - 1],
        [-(2**31), -5, -1, 0, 3, 7, 2**31 - 1],
        lambda v: v & M64,
        lambda v: v & 0xFFFF_FFFF,
    ),
    1: (
        0,
        [-(2**63), -1, 10**18],
        [-(2**63), -2, -1, 0, 10**18, 2**63 - 1],
        lambda v: v & M64,
        lambda v: v & M64,
    ),
    2: (
        1,
        [-1.5, -0.0, 2.0, float("inf")],
        [-float("inf"), -1.5, 0.0, -0.0, 1.0, 2.0, float("inf"), float("nan"), 3.0],
        _f32,
        _f32,
    ),
    3: (0, [-1e300, 0.0, 1e-300], [-float("inf"), -1e300, -0.0, 0.0, 1e-300, 5.0, float("nan")], _f64, _f64),
}


def _bucketize_batches() -> tuple[dict[str, Batch], dict[str, list[int]]]:
    out, exp = {}, {}
    for dtype, (fmt, bounds, xs, benc, xenc) in BUCKETIZE_CASES.items():
        for op, right in ((7, True), (8, False))[dtype % 2 :][:1]:  # each dtype, both OPs
            name = f"bz_dtype{dtype}_op{op}"
            out[name] = Batch(
                dict(OP=op, FORMAT=fmt, DTYPE=dtype, COUNT=len(xs), NUM_BOUNDARIES=len(bounds)),
                [xenc(x) for x in xs],
                table=[benc(b) for b in bounds],
            )
            exp[name] = [golden.bucketize(x, bounds, right) for x in xs]
    return out, exp


def _framed_batches(lanes: int) -> dict[str, Batch]:
    """VAR and SEQ batches, also with short (partial, tkeep-trimmed) beats mid-batch."""
    rng = random.Random(7)
    recs = [bytes(rng.randrange(256) for _ in range(n)) for n in (0, 1, 7, 8, 9, 31, 32, 33, 70, 3)]
    seqs = [
        [],
        [5],
        [1, 2, 3],
        [2**63 - 1, -(2**63), 0],
        [rng.randrange(-(2**63), 2**63) for _ in range(9)],
        [rng.randrange(-1000, 1000) for _ in range(20)],
        [],
    ]
    var_words, seq_words = pack_var(recs), pack_seq(seqs)
    out = {
        "var_xxh64": Batch(_regs(2, 2, len(recs), SEED), var_words),
        "var_xxh32_gaps": Batch(_regs(1, 2, len(recs), SEED), var_words, valid_prob=0.6, ready_prob=0.5),
        "var_mod": Batch(_regs(3, 2, len(recs), SEED, NUM_BUCKETS_LO=1000, NUM_BUCKETS_HI=0), var_words),
        "seq": Batch(dict(OP=9, FORMAT=3, COUNT=len(seqs)), seq_words),
        "seq_gaps": Batch(dict(OP=9, FORMAT=3, COUNT=len(seqs)), seq_words, valid_prob=0.7, ready_prob=0.4),
    }
    # The same VAR batch cut into irregular beats: some short ones without tlast (allowed: the
    # byte stream is the same), the last one short with tlast.
    beats, i, k = [], 0, 0
    while i < len(var_words):
        n = min(1 + (k % lanes), len(var_words) - i)
        k += 1
        ws = var_words[i : i + n]
        i += n
        beats.append(
            (sum(w << (64 * j) for j, w in enumerate(ws)), (1 << (8 * n)) - 1, int(i == len(var_words)))
        )
    out["var_short_beats"] = Batch(_regs(6, 2, len(recs), SEED, SLOT=77), [], beats=beats)
    return out


def _error_batches(lanes: int) -> dict[str, Batch]:
    N = lanes
    keys = list(range(1, 4 * N + 8))
    rec = pack_var([b"abc", b"0123456789"])
    full = (1 << (8 * N)) - 1

    def beat(ws, keep=None, last=0):
        return (
            sum(w << (64 * j) for j, w in enumerate(ws)),
            (1 << (8 * len(ws))) - 1 if keep is None else keep,
            last,
        )

    return {
        # early tlast: a partial last beat, then a full one
        "early_tlast_partial": Batch(_regs(2, 0, 3 * N + 1), keys[: 2 * N + 1]),
        "early_tlast_full": Batch(_regs(2, 0, 3 * N), keys[: 2 * N]),
        # early tlast mid-record (VAR)
        "early_tlast_var": Batch(_regs(2, 2, 5), rec[:3], tlast=[0, 0, 1]),
        # missing tlast: the words after the last record come in later beats (idle: EXTRA_DATA)
        "missing_tlast": Batch(_regs(2, 0, N + 1), keys[: 2 * N + 2], tlast=[0] * (2 * N + 2)),
        # missing tlast: the batch ends inside a beat that carries more words (and tlast)
        "missing_tlast_in_beat": Batch(
            _regs(2, 0, N + 1), [], beats=[beat(keys[:N]), beat(keys[N : 2 * N], last=1)]
        ),
        # VAR record ends inside a beat whose other words are extra
        "missing_tlast_var": Batch(_regs(2, 2, 1), [], beats=[beat(rec[:1]), beat(rec[1 : 1 + N], last=1)]),
        # bad parameters: trailer (0, BAD_PARAM) at once, the words are discarded
        "bad_param_op": Batch(_regs(_UNKNOWN_OP, 0, 3), keys[: 2 * N + 1]),
        "bad_param_slot": Batch(_regs(5, 0, 2, SLOT=1024), keys[:2]),
        "bad_param_mod0": Batch(_regs(3, 0, 2, NUM_BUCKETS_LO=0, NUM_BUCKETS_HI=0), keys[:2]),
        "bad_param_bz_var": Batch(_regs(7, 2, 1, NUM_BOUNDARIES=0, DTYPE=1), [8, 1]),
        # bad header (bits 63..32 set) inside a beat; SEQ longer than SEQ_MAX
        "bad_header": Batch(_regs(2, 2, 3), [3, int.from_bytes(b"abc", "little"), 1 << 40, 5, 6]),
        "bad_header_seq_max": Batch(dict(OP=9, FORMAT=3, COUNT=2), [SEQ_MAX + 1] + [1] * 3),
        "early_tlast_seq": Batch(dict(OP=9, FORMAT=3, COUNT=2), pack_seq([[1, 2], [3, 4, 5]])[:-1]),
        # tkeep: a hole in a full beat (word 0 clear) and a partial word (processed as if all
        # ones: BAD_TKEEP)
        "bad_tkeep_hole": Batch(
            _regs(2, 0, 2 * N), [], beats=[beat(keys[:N], keep=full & ~0xFF), beat(keys[N : 2 * N], last=1)]
        ),
        "bad_tkeep_partial_word": Batch(
            _regs(2, 0, N + 1), [], beats=[beat(keys[:N]), beat([keys[N]], keep=0x0F, last=1)]
        ),
        # data while idle (no START): consumed and discarded
        "idle_extra": Batch({}, keys[: 2 * N + 1], start=False),
        # a good batch afterwards
        "good_after": Batch(_regs(2, 0, N + 2), keys[: N + 2]),
        # SOFT_RESET mid-batch, then a good batch
        "soft_reset": Batch(_regs(2, 0, 4 * N), keys[: 4 * N], soft_reset_after=2, timeout=300),
        "after_soft_reset": Batch(_regs(1, 1, N + 1), keys[: N + 1]),
        # SOFT_RESET with values in flight and START again at once (a host's retry): the
        # batch's results only
        "restart": Batch(_regs(2, 0, 8 * N), keys[: 8 * N], soft_reset_after=4, restart=True),
    }


#: Expected extra ERR bits the reference (which sees words, not tkeep) does not model.
TKEEP_ERRORS = {"bad_tkeep_hole": E["BAD_TKEEP"], "bad_tkeep_partial_word": E["BAD_TKEEP"]}


@functools.cache  # per width, once per process (see pytestmark)
def _run_wide(lanes: int):
    rng = random.Random(100 + lanes)
    eng = _engine(lanes)
    named = {}
    named.update(_hash_batches(lanes, rng))
    bz, bz_exp = _bucketize_batches()
    named.update(bz)
    named.update(_framed_batches(lanes))
    named.update(_error_batches(lanes))
    # Backpressure: a slow reader (20% of cycles) and enough keys that the FIFO level reaches
    # the credit limit (fifo_depth - SLACK) after the pipeline fills: the credit must stall the
    # input and lose nothing.
    n_bp = lanes * eng.latency + 2 * (eng.fifo_depth - eng.SLACK) + 1
    named["backpressure"] = Batch(
        _regs(2, 0, n_bp, SEED), [rng.getrandbits(64) for _ in range(n_bp)], ready_prob=0.2
    )
    named["gaps"] = Batch(
        _regs(4, 1, 5 * lanes + 1, SEED, NUM_BUCKETS_LO=NB & 0xFFFF_FFFF, NUM_BUCKETS_HI=NB >> 32),
        [rng.getrandbits(32) for _ in range(5 * lanes + 1)],
        valid_prob=0.5,
        ready_prob=0.6,
    )
    # Throughput: >= 1000 keys, tready high, the longest operator path (mod).
    n_tp = 1024 + lanes - 1
    named["throughput"] = Batch(
        _regs(3, 0, n_tp, SEED, NUM_BUCKETS_LO=1000, NUM_BUCKETS_HI=0),
        [rng.getrandbits(64) for _ in range(n_tp)],
    )
    names = list(named)
    results = run_batches([named[n] for n in names], engine=eng, timeout=4000)
    return eng, named, dict(zip(names, results)), bz_exp


@pytest.fixture(scope="module", params=WIDE, ids=lambda n: f"lanes{n}")
def wide(request):
    return (request.param, *_run_wide(request.param))


@pytest.fixture(scope="module")
def narrow():
    """The VAR/SEQ batches on the 64-bit engine (lanes=1), for the identity check."""
    eng = OffloadEngine(table_depth=TABLE_DEPTH, fifo_depth=512, seq_max=SEQ_MAX)
    named = _framed_batches(1)
    named.pop("var_short_beats")
    names = list(named)
    return dict(zip(names, run_batches([named[n] for n in names], engine=eng, timeout=4000)))


def _check_against_reference(lanes, named, results, name, extra_err=0):
    b, res = named[name], results[name]
    ref_out, ref_err = _reference(b, lanes)
    assert not res.timed_out, name
    assert res.out[:-1] == ref_out[:-1], name
    assert res.regs["ERR"] == ref_err | extra_err, name
    flags = trailer_fields(ref_out[-1])[1] | extra_err
    assert trailer_fields(res.out[-1]) == (trailer_fields(ref_out[-1])[0], flags, MAGIC), name
    assert res.regs["DONE_COUNT"] == trailer_fields(ref_out[-1])[0], name
    _check_packing(res, lanes)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_hash_operators_fixed_formats_all_counts(wide):
    lanes, eng, named, results, _ = wide
    names = [n for n in named if n.startswith(("op", "count_"))]
    assert len(names) == 12 + len({0, 1, lanes - 1, lanes, lanes + 1, 2 * lanes + 3, 23})
    for name in names:
        _check_against_reference(lanes, named, results, name)
    # And directly against golden (independent of the reference model) for xxh64/FIXED8.
    for name in names:
        b = named[name]
        if name.startswith("count_"):
            assert results[name].out[:-1] == [golden.xxh64(k.to_bytes(8, "little"), SEED) for k in b.words]
    assert results["count_0"].out == [results["count_0"].out[-1]]


def test_bucketize_all_dtypes(wide):
    lanes, eng, named, results, bz_exp = wide
    for name, exp in bz_exp.items():
        assert results[name].out[:-1] == exp, name
        _check_against_reference(lanes, named, results, name)


def test_var_and_seq(wide, narrow):
    lanes, eng, named, results, _ = wide
    for name in ("var_xxh64", "var_xxh32_gaps", "var_mod", "seq", "seq_gaps", "var_short_beats"):
        _check_against_reference(lanes, named, results, name)
    for name, res1 in narrow.items():  # identical to the 64-bit engine
        assert results[name].out == res1.out, name
        assert results[name].regs["ERR"] == res1.regs["ERR"] == 0, name
    # The irregular beats (short ones mid-batch) carry the same records: no flag, same results.
    short = results["var_short_beats"]
    assert _stream_words(named["var_short_beats"], lanes) == named["var_xxh64"].words
    assert short.regs["ERR"] == 0 and len(short.out) == len(results["var_xxh64"].out)


def test_errors_give_the_reference_trailer_and_never_hang(wide):
    lanes, eng, named, results, _ = wide
    for name in _error_batches(lanes):
        if name in ("idle_extra", "soft_reset"):
            continue
        _check_against_reference(lanes, named, results, name, TKEEP_ERRORS.get(name, 0))
    r = results
    assert trailer_fields(r["early_tlast_partial"].out[-1]) == (2 * lanes + 1, E["EARLY_TLAST"], MAGIC)
    assert trailer_fields(r["missing_tlast_in_beat"].out[-1])[1] == E["MISSING_TLAST"]
    assert r["missing_tlast_in_beat"].regs["ERR"] == E["MISSING_TLAST"] | E["EXTRA_DATA"]
    for name in ("bad_param_op", "bad_param_slot", "bad_param_mod0", "bad_param_bz_var"):
        assert trailer_fields(r[name].out[-1]) == (0, E["BAD_PARAM"], MAGIC)
        assert r[name].accepted == len(beats_of(named[name], lanes))  # discarded, not stalled
    assert trailer_fields(r["bad_tkeep_hole"].out[-1]) == (2 * lanes, E["BAD_TKEEP"], MAGIC)
    assert r["idle_extra"].out == [] and r["idle_extra"].regs["ERR"] & E["EXTRA_DATA"]
    assert r["idle_extra"].accepted == len(beats_of(named["idle_extra"], lanes))
    # SOFT_RESET aborted the batch: no trailer; the rest of its beats were discarded while idle.
    assert r["soft_reset"].timed_out and not any(r["soft_reset"].last)
    assert r["soft_reset"].regs["ERR"] == E["EXTRA_DATA"]
    assert r["soft_reset"].accepted == len(beats_of(named["soft_reset"], lanes))
    # After SOFT_RESET the engine is clean and runs the next batch.
    _check_against_reference(lanes, named, results, "after_soft_reset")
    assert results["after_soft_reset"].regs["ERR"] == 0


def test_backpressure_and_idle_gaps(wide):
    lanes, eng, named, results, _ = wide
    for name in ("backpressure", "gaps"):
        _check_against_reference(lanes, named, results, name)
    res = results["backpressure"]
    # The credit limit was reached: the input (tvalid always high) was stalled at some point.
    assert res.in_cycles > res.accepted + 10, (res.in_cycles, res.accepted)


def test_throughput_n_keys_per_cycle(wide):
    lanes, eng, named, results, _ = wide
    res = results["throughput"]
    _check_against_reference(lanes, named, results, "throughput")
    rate = res.words_in / res.in_cycles
    assert res.words_in >= 1000
    assert rate >= 0.95 * lanes, rate


def test_lane_cores_bit_exact():
    """The one-word lane cores (lanes 1..N-1) against golden, 4- and 8-byte keys, padded to the
    record cores' latency (results appear exactly ``latency`` cycles after the key)."""
    rng = random.Random(9)
    keys = [rng.getrandbits(64) for _ in range(12)] + [0, M64]
    seed = rng.getrandbits(64)
    for cls, rec, f, mask in (
        (XXH64Lane, XXH64Core, golden.xxh64, M64),
        (XXH32Lane, XXH32Core, golden.xxh32, 0xFFFF_FFFF),
    ):
        core = rec()
        core._MustUse__silence = True
        latency = core.latency
        for key8 in (1, 0):
            kb = 8 if key8 else 4
            beats = [k & ((1 << 8 * kb) - 1) for k in keys]
            res, when = run_flow(
                cls(latency),
                beats[:3] + [None] + beats[3:],
                len(keys),
                params={"seed": seed & mask, "key8": key8},
                timeout=latency + 50,
            )
            assert res == [f(k.to_bytes(kb, "little"), seed & mask) for k in beats]
            assert when[0] == 3 + latency + 1 and when[3] - when[2] == 2


def test_lane_core_latency_validation():
    probe = XXH64Lane(100)
    probe._MustUse__silence = True
    with pytest.raises(ValueError, match=f"^latency must be at least {probe.depth}, not 2$"):
        XXH64Lane(2)
