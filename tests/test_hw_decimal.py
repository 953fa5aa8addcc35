"""Int2Decimal and DecimalFarmLane as plain Python functions, checked in the Amaranth simulator
as equations: the text is Python's ``str(x).encode()`` (what ``tf.strings.as_string`` and Keras
``Hashing`` format), the hash ``offload.golden_cityhash.farmhash64`` of that text, and the Keras
bins of the real-library vectors (``tests/reference/tensorflow.json``) follow from it.

Most runs use the ``"behavioural"`` flavour (digits by division, one ``*`` per product:
cycle-identical at the ports); shorter runs check the ``"lut"`` flavour that is synthesised
(the double dabble and the adder trees). The cores have no ``ready``: "backpressure" for them
is idle cycles in the input stream.
"""

from __future__ import annotations

import random

import pytest

from offload.golden_cityhash import CITY_K0, CITY_K1, CITY_K2, farmhash64
from offload.hw import decimal as hw_decimal
from offload.hw.decimal import DecimalFarmLane, Int2Decimal, dabble_stages
from offload.hw.simutil import run_flow
from tests.reference.load import load

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
I64 = (-(1 << 63), (1 << 63) - 1)
I32 = (-(1 << 31), (1 << 31) - 1)
SETTLE = 3  # run_flow's idle cycles before the first beat


def edges(lo: int, hi: int) -> list[int]:
    """0, +-1, every power of ten and +-(10**k - 1) in [lo, hi], and the type's limits."""
    out = [0, 1, -1, lo, hi, lo + 1, hi - 1]
    for k in range(1, 20):
        for v in (10**k, 10**k - 1, 10**k + 1):
            out += [x for x in (v, -v) if lo <= x <= hi]
    return out


def every_digit_count(rng: random.Random, lo: int, hi: int, per: int = 3) -> list[int]:
    """``per`` random values of each decimal length the type has, of both signs."""
    out = []
    for k in range(1, len(str(hi)) + 1):
        for sign in (1, -1):
            a, b = sorted((sign * 10 ** (k - 1), sign * (10**k - 1)))
            out += [rng.randint(max(a, lo), min(b, hi)) for _ in range(per)]
    return out


def word(v: int, key8: int, rng: random.Random | None = None) -> int:
    """The input word of ``v``: an int64, or an int32 in the low half (with ``rng``, random bits
    in the high half, which an int32 key ignores)."""
    if key8:
        return v & M64
    high = rng.getrandbits(32) << 32 if rng else 0
    return high | (v & M32)


def text_of(payload) -> bytes:
    """The text of an :data:`~offload.hw.decimal.DecimalText` payload (bytes beyond the length
    must be zero: the result would otherwise not be one well-defined field)."""
    text, n = int(payload.text), int(payload.length)
    field = text.to_bytes(20, "little")
    assert field[n:] == bytes(20 - n), field
    return field[:n]


def sim(cls, values, key8=1, *, multipliers="behavioural", gaps=0.0, rng=None, high_bits=False, **kw):
    """The core's results for ``values`` and the cycle each appeared; ``gaps``: the probability
    of an idle cycle before each value. Returns (results, cycles, input cycles, dut)."""
    rng = rng or random.Random(0)
    beats: list[int | None] = []
    at = []
    for v in values:
        while rng.random() < gaps:
            beats.append(None)
        at.append(SETTLE + 1 + len(beats))
        beats.append(word(v, key8, rng if high_bits else None))
    dut = cls(multipliers=multipliers, **kw)
    res, when = run_flow(dut, beats, len(values), params={"key8": key8}, timeout=dut.latency + 20)
    if cls is Int2Decimal:
        res = [text_of(r) for r in res]
    return res, when, at, dut


def texts(values) -> list[bytes]:
    return [str(v).encode() for v in values]


def hashes(values) -> list[int]:
    return [farmhash64(str(v).encode()) for v in values]


# ------------------------------------------------------------------------------ Int2Decimal


@pytest.mark.parametrize("key8,limits", [(1, I64), (0, I32)])
def test_text_edges_and_every_digit_count(key8, limits):
    values = edges(*limits) + every_digit_count(random.Random(key8), *limits)
    got, when, at, dut = sim(Int2Decimal, values, key8, high_bits=True)
    assert got == texts(values)
    assert when == [t + dut.latency for t in at]  # one value per cycle, fixed latency


def test_text_lut_flavour_is_cycle_identical():
    # The double dabble that is synthesised, on ~1100 values (every digit count, both signs).
    values = edges(*I64) + every_digit_count(random.Random(2), *I64, per=25)
    got, when, _, _ = sim(Int2Decimal, values, multipliers="lut", gaps=0.2)
    assert got == texts(values)
    assert when == sim(Int2Decimal, values, gaps=0.2)[1]


def test_text_idle_gaps_and_padding():
    values = every_digit_count(random.Random(3), *I64, per=2)
    depth = Int2Decimal._natural_depth("csa")
    got, when, at, dut = sim(Int2Decimal, values, gaps=0.4, latency=depth + 9)
    assert got == texts(values)
    assert dut.latency == depth + 9 and when == [t + depth + 9 for t in at]


# ------------------------------------------------------------------------------ DecimalFarmLane


@pytest.mark.parametrize("key8,limits", [(1, I64), (0, I32)])
def test_farm_edges_and_every_digit_count(key8, limits):
    values = edges(*limits) + every_digit_count(random.Random(10 + key8), *limits, per=6)
    got, when, at, dut = sim(DecimalFarmLane, values, key8, high_bits=True)
    assert got == hashes(values)
    assert when == [t + dut.latency for t in at]


def test_farm_one_key_per_cycle():
    """2000 random int64 keys (every digit count equally likely) back to back: one result per
    cycle, each exactly `latency` after its key."""
    rng = random.Random(11)
    values = [rng.choice((1, -1)) * rng.randrange(10 ** rng.randrange(19)) for _ in range(2000)]
    got, when, at, dut = sim(DecimalFarmLane, values)
    assert got == hashes(values)
    assert when == list(range(SETTLE + 1 + dut.latency, SETTLE + 1 + dut.latency + len(values)))
    assert len(values) / (when[-1] - when[0] + 1) == 1.0


def test_farm_idle_gaps_and_padding():
    values = every_digit_count(random.Random(12), *I64, per=4)
    depth = DecimalFarmLane._natural_depth("csa")
    got, when, at, dut = sim(DecimalFarmLane, values, gaps=0.3, rng=random.Random(12), latency=depth + 5)
    assert got == hashes(values)
    assert when == [t + depth + 5 for t in at]


def test_farm_lut_flavour_is_cycle_identical():
    # Every path (1..3, 4..7, 8..16, 17..20 bytes) through the adder trees that are synthesised.
    values = edges(*I64) + every_digit_count(random.Random(13), *I64, per=1)
    got, when, _, _ = sim(DecimalFarmLane, values, multipliers="lut", gaps=0.1)
    assert got == hashes(values)
    assert when == sim(DecimalFarmLane, values, gaps=0.1)[1]
    got32, _, _, _ = sim(DecimalFarmLane, edges(*I32), 0, multipliers="lut", high_bits=True)
    assert got32 == hashes(edges(*I32))


def keras_bin(h: int, num_bins: int, mask_value, value) -> int:
    """Keras ``Hashing``'s bin of Fingerprint64 ``h`` (``offload.compat.keras``): with a mask
    and more than one bin, bin 0 is the mask's and the rest ``h % (num_bins - 1) + 1``."""
    if mask_value is None or num_bins == 1:
        return h % num_bins
    return 0 if value == mask_value else h % (num_bins - 1) + 1


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_keras_reference_vectors(dtype):
    """TensorFlow's and Keras's own bins of int32/int64 tensors are the bins of this core's
    hash (bucket and mask steps as the engine's post-processing computes them)."""
    groups = [g for g in load("tensorflow") if g.input_type == dtype]
    values = sorted({v for g in groups for v, _ in g.cases})
    key8 = int(dtype == "int64")
    got, _, _, _ = sim(DecimalFarmLane, values, key8, high_bits=True)
    h = dict(zip(values, got))
    checked = 0
    for g in groups:
        p = g.params
        if "num_bins" in p:
            want = [keras_bin(h[v], p["num_bins"], p["mask_value"], v) for v, _ in g.cases]
        else:  # categorical_column_with_hash_bucket: to_hash_bucket_fast(as_string(x))
            want = [h[v] % p["num_buckets"] for v, _ in g.cases]
        assert want == [e for _, e in g.cases], g.name
        checked += len(g.cases)
    assert checked == (16 * 108 if dtype == "int32" else 16 * 206 + 3 * 205)


# ------------------------------------------------------------------------------ parameters


def test_depths():
    assert sum(dabble_stages()) == 61 and max(dabble_stages()) == hw_decimal.DABBLE_STEPS
    # sign, dabble, two text stages, two shift stages
    assert Int2Decimal._natural_depth("csa") == 1 + len(dabble_stages()) + 2 + 2
    assert DecimalFarmLane().latency == DecimalFarmLane(multipliers="behavioural").depth


@pytest.mark.parametrize("cls", [Int2Decimal, DecimalFarmLane])
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_parameter_validation(cls):
    depth = cls._natural_depth("csa")
    with pytest.raises(ValueError, match=f"^latency must be at least {depth}, not 3$"):
        cls(latency=3)
    with pytest.raises(ValueError, match=f"^latency must be at least {depth}, not True$"):
        cls(latency=True)
    with pytest.raises(ValueError, match="^multipliers must be one of 'lut', 'behavioural', not 'dsp'$"):
        cls(multipliers="dsp")


# ------------------------------------------------------------------------------ mutation


@pytest.mark.parametrize(
    "name,value,digits",
    [
        ("CITY_K0", CITY_K0 ^ 1 << 20, range(1, 3)),  # 1..3 bytes: z * k0
        ("CITY_K1", CITY_K1 ^ 1 << 33, range(17, 20)),  # 17..20 bytes: Fetch64(0) * k1
        ("CITY_K2", CITY_K2 ^ 1 << 5, range(1, 20)),  # every path
        ("_ZERO", ord("@"), range(1, 20)),  # the digits' ASCII (its high nibble)
    ],
)
def test_equation_check_can_fail(monkeypatch, name, value, digits):
    """A wrong constant in the hardware gives a wrong hash for every text whose path uses it:
    the equations above would fail."""
    rng = random.Random(14)
    values = [rng.randrange(10 ** (k - 1), 10**k) for k in digits]
    values += [-v for v in values]
    assert sim(DecimalFarmLane, values)[0] == hashes(values)
    monkeypatch.setattr(hw_decimal, name, value)
    bad = sim(DecimalFarmLane, values)[0]
    assert [a != b for a, b in zip(bad, hashes(values))] == [True] * len(values)


def test_text_check_can_fail(monkeypatch):
    """The text equations catch a wrong sign character and a double dabble that does not
    correct the digit 5 (the classic slip: ``> 5`` for ``>= 5``)."""
    values = edges(*I64)
    assert sim(Int2Decimal, values, multipliers="lut")[0] == texts(values)
    monkeypatch.setattr(hw_decimal, "_MINUS", ord("+"))
    bad = sim(Int2Decimal, values)[0]
    assert [a != b for a, b in zip(bad, texts(values))] == [v < 0 for v in values]
    monkeypatch.undo()
    monkeypatch.setattr(hw_decimal, "_HALF", 6)
    bad = sim(Int2Decimal, values, multipliers="lut")[0]
    assert sum(a != b for a, b in zip(bad, texts(values))) > len(values) // 4
