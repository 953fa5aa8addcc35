"""SigridHash core: TorchArrow's ``sigrid_hash`` of int64 ids, bit-exact with
:func:`offload.golden_sigrid.sigrid_hash`, one id per cycle.

Pipeline (every step is independent of the previous id, so one id enters per cycle):

1. ``twang_mix64(id)``: four multiplies by small constants (``2**21 - 1`` with ``-1`` added,
   265, 21, ``2**31 + 1``: two or three terms each) with an xor-shift folded into the input of
   the next one.
2. ``hash_128_to_64(salt, .)``: three multiplies by ``HASH128_KMUL`` (from the golden model),
   each a pipelined constant multiply of the project's multiplier style (an adder tree of the
   constant's signed digits in LUTs, no DSP; or the behavioural simulation flavour,
   :data:`~offload.hw.common.MULTIPLIERS`), with the salt's and the shifts' xors in front.
3. The floor modulo of the signed result by ``max_value`` (``1 <= max_value < 2**63``): for a
   negative ``hashed``, ``hashed mod n = n - 1 - (~hashed mod n)`` (``~hashed = -hashed - 1``
   is in ``[0, 2**63)``), so one unsigned remainder serves both signs: the engine's restoring
   remainder pipeline :class:`~offload.hw.postproc.ModPipe` (any 64-bit divisor, no reciprocal
   to set up, one value per cycle), then one subtract. ``max_value == 1`` gives 0 on both paths,
   as the golden model's early return.

Ports: ``i`` In(stream of 64-bit ids, two's complement, always ready), ``o`` Out(stream of 64-bit
results in ``[0, max_value)``, always ready: the consumer takes every result), ``salt`` In(64)
and ``max_value`` In(64), batch parameters held while ids flow (both are registered: allow 2
cycles after a change before the first id). ``max_value <= 0`` is refused by the golden model
(and must be by the engine before a batch); the core's result for it is unspecified.
Latency :attr:`SigridCore.latency` cycles; throughput one id per cycle. Reset: the synchronous
``rst`` clears only the ``valid`` bits.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from offload.golden_sigrid import HASH128_KMUL

from .common import Pipe, check_choice, mul_depth, set_multiplier_params, xorshift
from .postproc import ModPipe

__all__ = ["SigridCore", "SigridMix", "SigridFix", "TWANG_STEPS", "HASH128_SHIFT"]

M64 = (1 << 64) - 1

#: folly's ``twang_mix64`` as ``(xor-shift before, multiplier, addend)`` steps, then a final
#: ``key ^= key >> 28`` folded into the next step: ``(~k) + (k << 21)`` is ``k * (2**21 - 1) - 1``,
#: ``k + (k << 3) + (k << 8)`` is ``k * 265``, ``k + (k << 2) + (k << 4)`` is ``k * 21``,
#: ``k + (k << 31)`` is ``k * (2**31 + 1)``. The golden model writes them inline; the equations
#: check them against it.
TWANG_STEPS = ((0, (1 << 21) - 1, M64), (24, 265, 0), (14, 21, 0), (28, (1 << 31) + 1, 0))
#: ``hash_128_to_64``'s xor-shift.
HASH128_SHIFT = 47


class SigridMix(wiring.Component):
    """The part of ``sigrid_hash`` before the modulo: ``twang_mix64``, ``hash_128_to_64`` with
    the salt, and the sign fold (module docstring, steps 1-2 and the fold of step 3).

    Ports: ``i`` In(stream of 64-bit ids, always ready), ``o`` Out(stream of 64-bit values,
    always ready: ``hashed``, or ``~hashed`` when ``hashed`` is negative; in ``[0, 2**63)``),
    ``neg`` Out(1) (``hashed`` was negative; with ``o``), ``salt`` In(64) (registered: allow 2
    cycles after a change). Latency :attr:`latency`, one id per cycle; reset clears only
    ``valid``. The engine feeds ``o`` to a lane's modulo core and ``neg`` (delayed as much) to
    :class:`SigridFix`; :class:`SigridCore` is the three together.
    """

    def __init__(self, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        self._MustUse__silence = False
        hash_depth = sum(mul_depth(64, c, 64, a, adder_levels) for _, c, a in TWANG_STEPS)
        hash_depth += 3 * mul_depth(64, HASH128_KMUL, 64, levels=adder_levels)
        self.latency = hash_depth + 1
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "o": Out(stream.Signature(64, always_ready=True)),
                "neg": Out(1),
                "salt": In(64),
            }
        )

    def elaborate(self, platform):
        m = Module()
        salt = Signal(64, reset_less=True)
        m.d.sync += salt.eq(self.salt)
        kw = {"levels": self.adder_levels, "behavioural": self.behavioural}
        p = Pipe(m, "sg", **kw, valid=self.i.valid, k=self.i.payload)
        one = Const(1)
        # (operand, multiplier, addend); each operand after the first is registered by the
        # step before it (``then``), so a step starts from a register, not an xor-shift.
        steps = [(xorshift("k", shift), mult, add) for shift, mult, add in TWANG_STEPS]
        # hash_128_to_64(salt, k): a = (k ^ salt) * kMul; a ^= a >> 47; b = (salt ^ a) * kMul;
        # b ^= b >> 47; b * kMul. (The twang's last xor-shift is TWANG_STEPS' trailing 28.)
        steps += [
            (lambda f: f["k"] ^ salt, HASH128_KMUL, 0),
            (lambda f: salt ^ xorshift("k", HASH128_SHIFT)(f), HASH128_KMUL, 0),
            (xorshift("k", HASH128_SHIFT), HASH128_KMUL, 0),
        ]
        x = steps[0][0](p.f)
        for i, (_, mult, add) in enumerate(steps):
            then = steps[i + 1][0] if i + 1 < len(steps) else None
            p.mul_step("k", x, mult, 64, one, add=add, then=then)
            x = p.take("k_x") if then else None
        k = p["k"]
        p.stage(drop=["k"], neg=k[63], x=Mux(k[63], ~k, k))
        assert p.depth == self.latency, (p.depth, self.latency)
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["x"]), self.neg.eq(p["neg"])]
        return m


class SigridFix(wiring.Component):
    """The floor modulo's sign fix-up: ``r`` for a non-negative ``hashed``, else
    ``max_value - 1 - r`` (module docstring, step 3).

    Ports: ``i`` In(stream of 64-bit remainders ``r`` of :class:`SigridMix`'s value by
    ``max_value``, always ready), ``neg`` In(1) (that value's sign, with ``i``), ``max_value``
    In(64) (registered: allow 2 cycles after a change), ``o`` Out(stream of 64-bit results,
    always ready). Latency 1; reset clears ``valid``.
    """

    latency = 1

    def __init__(self):
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "neg": In(1),
                "max_value": In(64),
                "o": Out(stream.Signature(64, always_ready=True)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        nm1 = Signal(64, reset_less=True)  # max_value - 1
        res = Signal(64, reset_less=True)
        m.d.sync += [
            nm1.eq((self.max_value - 1)[:64]),
            self.o.valid.eq(self.i.valid),
            res.eq(Mux(self.neg, (nm1 - self.i.payload)[:64], self.i.payload)),
        ]
        m.d.comb += self.o.payload.eq(res)
        return m


class SigridCore(wiring.Component):
    """``sigrid_hash(id, salt, max_value)`` of one int64 id per cycle (module docstring):
    :class:`SigridMix`, a :class:`~offload.hw.postproc.ModPipe` and :class:`SigridFix`.

    ``bits_per_stage``: the remainder pipeline's radix (1 or 2, see
    :class:`~offload.hw.postproc.ModPipe`: latency 65 or 33). ``adder_levels``, ``multipliers``:
    as the hash cores. Latency :attr:`latency` = the twang and ``hash_128_to_64`` multiplies +
    1 (sign fold) + the remainder pipeline + 1 (sign fix-up). In the engine the lane's own
    modulo core serves instead of a ModPipe of its own.
    """

    def __init__(self, bits_per_stage: int = 1, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        self.bits_per_stage = check_choice("bits_per_stage", bits_per_stage, (1, 2))
        self._MustUse__silence = False
        self.mod_latency = 64 // bits_per_stage + 1  # ModPipe's
        mix = SigridMix(adder_levels, multipliers)
        mix._MustUse__silence = True  # built only to read its latency
        self.latency = mix.latency + self.mod_latency + SigridFix.latency
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "o": Out(stream.Signature(64, always_ready=True)),
                "salt": In(64),
                "max_value": In(64),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.mix = mix = SigridMix(self.adder_levels, self.multipliers)
        m.submodules.mod = mod = ModPipe(self.bits_per_stage, self.multipliers)
        m.submodules.fix = fix = SigridFix()
        assert mod.latency == self.mod_latency
        s = Pipe(m, "sgn", neg=mix.neg)
        for _ in range(mod.latency):
            s.stage()
        m.d.comb += [
            mix.i.valid.eq(self.i.valid),
            mix.i.payload.eq(self.i.payload),
            mix.salt.eq(self.salt),
            mod.i.valid.eq(mix.o.valid),
            mod.i.payload.eq(mix.o.payload),
            mod.num_buckets.eq(self.max_value),
            fix.i.valid.eq(mod.o.valid),
            fix.i.payload.eq(mod.o.payload),
            fix.neg.eq(s["neg"]),
            fix.max_value.eq(self.max_value),
            self.o.valid.eq(fix.o.valid),
            self.o.payload.eq(fix.o.payload),
        ]
        return m
