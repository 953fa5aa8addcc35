"""The LUT constant multipliers of ``offload.hw.common`` as equations: a pipelined product
``mul(x)`` equals ``(x * c + add) mod 2**width`` for every XXH prime, random and edge operands."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from offload import golden
from offload.hw.common import (
    ADDER_LEVELS,
    Pipe,
    const_mul_terms,
    csa_level,
    csd_digits,
    mul_depth,
    term_value,
    ternary_level,
    tree_level,
)
from offload.hw.simutil import run_flow

EDGE = [
    0,
    1,
    2,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 63,
    (1 << 64) - 1,
    0x5555555555555555,
    0xAAAAAAAAAAAAAAAA,
]


class _MulStep(wiring.Component):
    """``o = active ? x * const + add : keep`` through :meth:`Pipe.mul_step`."""

    def __init__(self, const: int, width: int, x_width: int, add: int = 0, levels=1):
        self.const, self.width, self.add, self.x_width = const, width, add, x_width
        self.levels = levels
        self.latency = mul_depth(x_width, const, width, add, levels)
        super().__init__(
            {
                "i": In(stream.Signature(x_width + 1 + width, always_ready=True)),
                "o": Out(stream.Signature(width, always_ready=True)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        x = self.i.payload[: self.x_width]
        act = self.i.payload[self.x_width]
        keep = self.i.payload[self.x_width + 1 :]
        p = Pipe(m, "t", levels=self.levels, valid=self.i.valid, h=keep)
        n = p.mul_step("h", x, self.const, self.width, act, add=self.add)
        assert n == self.latency
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["h"])]
        return m


class _CsaSum(wiring.Component):
    """Sum of ``x * const`` reduced by carry-save levels, then one adder (the stripe loops)."""

    def __init__(self, const: int, width: int):
        self.const, self.width = const, width
        super().__init__(
            {
                "i": In(stream.Signature(width, always_ready=True)),
                "o": Out(stream.Signature(width, always_ready=True)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        terms = const_mul_terms(self.i.payload, self.const, self.width)
        while len(terms) > 2:
            terms = csa_level(terms, self.width)
            # Each level as named signals: the next level reads every value twice (sum and
            # majority), which the simulator would otherwise expand as a tree per level.
            named = [Signal(len(v)) for v, _ in terms]
            m.d.comb += [n.eq(v) for n, (v, _) in zip(named, terms)]
            terms = [(n, sh) for n, (_, sh) in zip(named, terms)]
        total = sum((term_value(t, self.width) for t in terms[1:]), term_value(terms[0], self.width))
        r = Signal(self.width)
        v = Signal()
        m.d.sync += [r.eq(total[: self.width]), v.eq(self.i.valid)]
        m.d.comb += [self.o.valid.eq(v), self.o.payload.eq(r)]
        return m


def rtl_mul(const, width, xs, *, x_width=None, add=0, active=None, keep=None, levels=1):
    x_width = x_width or width
    active = active or [1] * len(xs)
    keep = keep or [0] * len(xs)
    beats = [x | (a << x_width) | (k << (x_width + 1)) for x, a, k in zip(xs, active, keep)]
    return run_flow(_MulStep(const, width, x_width, add, levels), beats, len(xs))[0]


def model_mul(const, width, x, add=0):
    return (x * const + add) & ((1 << width) - 1)


@pytest.mark.parametrize("const", golden.XXH64_PRIMES)
def test_csd_digits(const):
    for width in (32, 64):
        digits = csd_digits(const, width)
        assert sum(d << s for s, d in digits) % (1 << width) == const % (1 << width)
        shifts = [s for s, _ in digits]
        assert all(b - a >= 2 for a, b in zip(shifts, shifts[1:]))  # non-adjacent form


@pytest.mark.parametrize(
    "width,primes,add", [(64, golden.XXH64_PRIMES, golden.XXH64_PRIMES[3]), (32, golden.XXH32_PRIMES, 0)]
)
@pytest.mark.parametrize("levels", ADDER_LEVELS)
def test_mul_step_every_prime(width, primes, add, levels):
    rng = random.Random(width)
    mask = (1 << width) - 1
    xs = [x & mask for x in EDGE] + [rng.getrandbits(width) for _ in range(40)]
    for c in primes:
        for a in (0, add):
            assert rtl_mul(c, width, xs, add=a, levels=levels) == [model_mul(c, width, x, a) for x in xs]


@pytest.mark.parametrize("levels", ADDER_LEVELS)
def test_mul_step_narrow_operand_and_bypass(levels):
    # A byte times PRIME64_5 (the XXH64 byte step) takes the operand-bit decomposition.
    c = golden.XXH64_PRIMES[4]
    xs = list(range(256))
    assert rtl_mul(c, 64, xs, x_width=8, levels=levels) == [model_mul(c, 64, x) for x in xs]
    # A 32-bit operand (the 4-byte step) and the bypass: inactive steps keep the old value.
    rng = random.Random(1)
    xs = [rng.getrandbits(32) for _ in range(30)]
    act = [rng.getrandbits(1) for _ in xs]
    keep = [rng.getrandbits(64) for _ in xs]
    c = golden.XXH64_PRIMES[0]
    assert rtl_mul(c, 64, xs, x_width=32, active=act, keep=keep, levels=levels) == [
        model_mul(c, 64, x) if a else k for x, a, k in zip(xs, act, keep)
    ]


@pytest.mark.parametrize("width,primes", [(64, golden.XXH64_PRIMES), (32, golden.XXH32_PRIMES)])
def test_carry_save_reduction(width, primes):
    rng = random.Random(2)
    mask = (1 << width) - 1
    xs = [x & mask for x in EDGE] + [rng.getrandbits(width) for _ in range(30)]
    for c in primes:
        assert run_flow(_CsaSum(c, width), xs, len(xs))[0] == [model_mul(c, width, x) for x in xs]


def test_tree_depth_is_logarithmic():
    # 64-bit primes have 22..25 CSD digits: five adder levels, not 36 chained adders.
    for c in golden.XXH64_PRIMES:
        assert mul_depth(64, c, 64) == 5
    assert mul_depth(8, golden.XXH64_PRIMES[4], 64) == 3
    assert len(tree_level([(Signal(8), 0)] * 5, 8)) == 3
    # "csa": three terms per stage, so 22..25 terms take three stages (27 >= 25), as with two
    # binary levels, but with one carry chain per stage.
    assert {mul_depth(64, c, 64, levels="csa") for c in golden.XXH64_PRIMES} == {3}
    assert [len(ternary_level([(Signal(8), 0)] * n, 8)) for n in (2, 3, 4, 5, 7)] == [1, 1, 2, 2, 3]


def test_equation_fails_on_a_wrong_constant():
    # The check above can fail: the product of a neighbouring constant differs.
    c = golden.XXH64_PRIMES[0]
    xs = [3, 5, (1 << 64) - 1]
    assert rtl_mul(c ^ 1 << 40, 64, xs) != [model_mul(c, 64, x) for x in xs]


@pytest.mark.parametrize("levels", ADDER_LEVELS)
def test_xxh_cores_adder_levels(levels):
    """Every ``adder_levels`` of the hash cores (one or two binary adder levels, or a carry-save
    level and one adder, per stage) is bit-exact on the boundary lengths, with idle gaps; the
    latency attribute is the measured one."""
    from offload.hw.xxhash import XXH32Core, XXH32Fixed, XXH64Core, XXH64Fixed
    from tests.lengths import BOUNDARY_LENGTHS
    from tests.test_hw_cores import _record_beats, _with_gaps

    rng = random.Random(levels)
    recs = [bytes(rng.getrandbits(8) for _ in range(n)) for n in BOUNDARY_LENGTHS]
    beats = _with_gaps([b for r in recs for b in _record_beats(r)], rng, 0.2)
    for cls, model, seed in (
        (XXH64Core, golden.xxh64, 0x9E3779B185EBCA87),
        (XXH32Core, golden.xxh32, 0x12345678),
    ):
        assert run_flow(cls(adder_levels=levels), beats, len(recs), params={"seed": seed})[0] == [
            model(r, seed) for r in recs
        ]
    for cls, model, kb in (
        (XXH64Fixed, golden.xxh64, 8),
        (XXH64Fixed, golden.xxh64, 4),
        (XXH32Fixed, golden.xxh32, 4),
        (XXH32Fixed, golden.xxh32, 8),
    ):
        keys = [rng.getrandbits(8 * kb) for _ in range(20)]
        core = cls(key_bytes=kb, adder_levels=levels)
        res, when = run_flow(core, keys, len(keys), params={"seed": 7})
        assert res == [model(k.to_bytes(kb, "little"), 7) for k in keys]
        # run_flow applies the first key after its settle cycles (3); latency is exact
        assert when[0] == 3 + core.latency + 1 and when[-1] - when[0] == len(keys) - 1
