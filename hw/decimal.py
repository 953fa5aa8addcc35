"""Keras-style integers on the device: the decimal text of an int64/int32 and its FarmHash
Fingerprint64, bit-exact with ``offload.golden_cityhash.farmhash64(str(x).encode())``.

Keras's ``Hashing`` layer (and ``tf.strings.to_hash_bucket_fast`` after ``tf.strings.as_string``)
hashes an integer as its decimal text (``-7`` -> ``b"-7"``), see :mod:`offload.compat.keras`.
These cores make that text in hardware, so the device never needs the host to format strings:

* :class:`Int2Decimal`: one int64 (or sign-extended int32) per cycle to its ASCII text, 1..20
  bytes (``"-9223372036854775808"`` is the longest), as a little-endian byte field plus a length.
* :class:`DecimalFarmLane`: the same conversion followed by FarmHash Fingerprint64 of the text
  (its 1..16 and 17..32-byte paths: the text has 1..20 bytes), one key per cycle, a 64-bit hash
  out; the bin/mask step stays on the engine's post-processing cores.

How the text is made (why no division): the magnitude goes through a pipelined *double dabble*
(shift-and-add-3), ``DABBLE_STEPS`` binary bits per register stage. Each step is one LUT level
per BCD digit (a digit of 5..9 gets + 3 before the shift) and no carry chain, so a stage is a few
LUT levels whatever the width; a reciprocal multiply by ``10**-k`` would need 128-bit product
trees for the same job. The digits come out right-aligned (the last character at a fixed
place), which is what FarmHash's end words ``Fetch64(len - 8)``, ``Fetch64(len - 16)`` and
``Fetch32(len - 4)`` read: they are wires. Only the head words ``Fetch64(0)`` and ``Fetch64(8)``
(and the text output) need the left-aligned text, from a byte shifter over two stages.

Multiplies (:class:`DecimalFarmLane`): as :class:`~offload.hw.cityhash.CityFarmLane`, constant
multiplies are LUT adder trees (``multipliers="lut"``) or one ``*`` delayed by the tree's depth
(``"behavioural"``, simulation only, cycle-identical at the ports); ``k2 + 2 * len`` is the
constant's tree plus gated copies. Paths share products where only the multiplier's variable part
differs: ``c`` is ``Fetch64(len - 8)`` times ``mul`` for 8..16 and 17..32 bytes, ``d`` is times
``mul`` (8..16) or ``k2`` (17..32, the length gated off), and HashLen16's first multiply is
1..3 bytes' final ``* k2`` (length gated off again). In the ``"behavioural"`` flavour the
double dabble is also replaced by ``//`` and ``%`` (same stages), for fast simulation only.

Constants (k0, k1, k2) come from :mod:`offload.golden_cityhash`.

No DSP blocks and no BRAM; most of the text's LUTs are the double dabble's 576 digit
corrections (4 LUT4 each), most of the lane's the hash. Area, latency and Fmax:
docs/verification.md, the framework-hash cores' table.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from offload.golden_cityhash import CITY_K0, CITY_K1, CITY_K2

from .cityhash import HashLen16, add3, level, shift_mix, start_mul
from .common import Pipe, set_multiplier_params
from .lanes import delay, lane_latency

__all__ = ["DABBLE_STEPS", "DIGITS", "MAX_BYTES", "DecimalFarmLane", "DecimalText", "Int2Decimal"]

#: Decimal digits of the largest magnitude, ``2**63`` (int64's minimum): 9223372036854775808.
DIGITS = 19
#: Bytes of the longest text, ``"-9223372036854775808"``.
MAX_BYTES = 20
#: Double-dabble steps per register stage: each is one LUT level per digit, no carry chain; four
#: keep a stage well inside 10 ns on an ECP5 (16 stages for the 61 steps of a 64-bit magnitude).
DABBLE_STEPS = 4
#: The magnitude's top 3 bits start the BCD register (a value < 8 needs no correction yet).
_START_BITS = 3
_MAG_MAX = 1 << 63
#: A BCD digit of at least half the radix passes 9 when doubled: + 3 before the shift is + 6
#: after it, which moves the 4-bit carry (at 16) to the decimal one (at 10).
_HALF = 10 // 2

#: :class:`Int2Decimal`'s output: ``text``, byte ``k`` = the text's ``k``-th character (bytes at
#: and beyond ``length`` are 0); ``length``, 1..20.
DecimalText = data.StructLayout({"text": 8 * MAX_BYTES, "length": 5})

_MINUS = ord("-")
_ZERO = ord("0")


# ---------------------------------------------------------------------------------------------
# The decimal text as pipeline steps
# ---------------------------------------------------------------------------------------------


def _sign_stage(p: Pipe) -> None:
    """Fields ``w`` (the input word) and ``k8`` -> ``neg`` and the magnitude ``mag`` (64 bits:
    ``2**63`` for int64's minimum)."""
    w, k8 = p.f.pop("w"), p.f.pop("k8")
    x = Mux(k8, w, Cat(w[:32], w[31].replicate(32)))  # a 4-byte key is an int32: sign-extend
    neg = x[63]
    p.stage(neg=neg, mag=Mux(neg, (~x + 1)[:64], x))


def _prefix_bound(bits: int) -> int:
    """The largest value of the magnitude's top ``bits`` bits (the magnitude is at most 2**63)."""
    return _MAG_MAX >> (64 - bits)


def _add3(d: Value) -> Value:
    """``d >= 5 ? d + 3 : d`` of a BCD digit as a truth table per output bit: one LUT4 each (as a
    compare and an add, Yosys builds carry chains: 592 CARRY4 on the xc7)."""
    table = [v + 3 if v >= _HALF else v for v in range(16)]  # 10..15 never occur
    return Cat(
        *[Const(sum(1 << v for v in range(16) if table[v] >> b & 1), 16).bit_select(d, 1) for b in range(4)]
    )


def _dabble_step(p: Pipe, digits: list[Value], bit: Value, bound: int, step: int) -> list[Value]:
    """One shift-and-add-3 step: the BCD ``digits`` (least significant first) of a value of at
    most ``bound``, times two plus ``bit``. A digit of 5..9 gets + 3 before the shift, so the
    doubled digit carries into the next one; digits that cannot reach 5 are not corrected."""
    # Each corrected digit is a named wire: the next step reads it twice (its low bits and its
    # carry), and simulators expand unnamed expressions as trees (exponential over the steps).
    fixed = [
        p.wire(_add3(d), f"dd{step}_{j}") if bound >= _HALF * 10**j else Cat(d, Const(0, 4))[:4]
        for j, d in enumerate(digits)
    ]
    out = []
    carry = Value.cast(bit)
    for j in range(len(str(2 * bound + 1))):
        d = fixed[j] if j < len(fixed) else Const(0, 4)
        out.append(Cat(carry, d[:3]))
        carry = d[3]
    return out


def dabble_stages() -> list[int]:
    """Double-dabble steps of each register stage (their sum: the magnitude's bits after the
    first three)."""
    steps = 64 - _START_BITS
    n = -(-steps // DABBLE_STEPS)
    return [steps // n + (1 if k < steps % n else 0) for k in range(n)]


def _dabble(p: Pipe) -> None:
    """Field ``mag`` -> ``bcd``: its :data:`DIGITS` decimal digits, 4 bits each, least
    significant first, in ``len(dabble_stages())`` stages."""
    mag = p.f.pop("mag")
    if p.behavioural:
        # Simulation flavour: the digits by division, carried through the same stages.
        p.f["bcd"] = Cat(*[((mag // 10**j) % 10)[:4] for j in range(DIGITS)])
        for _ in dabble_stages():
            p.stage()
        return
    digits = [mag[64 - _START_BITS :]]
    bits = _START_BITS
    p.f["rest"] = mag[: 64 - _START_BITS]
    for steps in dabble_stages():
        rest = p.f.pop("rest")
        for _ in range(steps):
            bits += 1
            digits = _dabble_step(p, digits, rest[len(rest) - 1], _prefix_bound(bits - 1), bits)
            rest = rest[: len(rest) - 1]
            assert _prefix_bound(bits) < 10 ** len(digits)
        p.f["bcd"] = Cat(*digits)
        if len(rest):
            p.f["rest"] = rest
        p.stage()
        digits = [p.f["bcd"][4 * j : 4 * j + 4] for j in range(len(digits))]
    assert len(digits) == DIGITS and bits == 64


def _text_stages(p: Pipe) -> None:
    """Fields ``bcd``, ``neg`` -> ``right`` (the text right-aligned: its last character is byte
    ``MAX_BYTES - 1``, bytes before its first are 0), ``n`` (its length) and ``s`` (the shift
    that left-aligns it: ``MAX_BYTES - n``), in two stages (``n`` and ``s`` from the one-hot
    top digit, no adder)."""
    bcd = p.f["bcd"]
    d = [bcd[4 * j : 4 * j + 4] for j in range(DIGITS)]
    # t[j]: digit j is part of the text (a non-zero digit at or above it; digit 0 always is).
    t = [Const(1, 1)] + [Cat(*d[j:]).any() for j in range(1, DIGITS)]
    p.stage(t=Cat(*t))
    bcd, neg, t = p.f.pop("bcd"), p.f.pop("neg"), p.f.pop("t")
    d = [bcd[4 * j : 4 * j + 4] for j in range(DIGITS)]
    tt = [t[j] for j in range(DIGITS)] + [Const(0, 1)]
    chars = []  # chars[j]: the character j places before the end
    for j in range(MAX_BYTES):
        digit = Cat(d[j], Const(_ZERO >> 4, 4)) if j < DIGITS else Const(0, 8)  # '0' + d: no carry
        sign = Mux(neg & tt[j - 1], _MINUS, 0) if j else Const(0, 8)  # '-' just above the top digit
        chars.append(Mux(tt[j], digit, sign))
    # The length from the one-hot top digit: j + 1 digits, plus the sign.
    n, s = Const(0, 5), Const(0, 5)
    for j in range(DIGITS):
        top = tt[j] & ~tt[j + 1]
        n = n | Mux(top, Mux(neg, j + 2, j + 1), 0)
        s = s | Mux(top, Mux(neg, MAX_BYTES - j - 2, MAX_BYTES - j - 1), 0)
    p.stage(right=Cat(*reversed(chars)), n=n[:5], s=s[:5])


def _shift_down(v: Value, s: Value, bits) -> Value:
    """``v`` shifted down by ``s`` bytes, for the bits ``bits`` of ``s`` (one mux level each,
    zeros shifted in)."""
    for b in bits:
        k = 8 << b
        v = Mux(s[b], Cat(v[k:], Const(0, k)), v)
    return v


def decimal_steps(p: Pipe) -> None:
    """The text of fields ``w`` (64-bit word) and ``k8`` (1: an int64, 0: an int32 in the low
    half) in pipe ``p``: leaves ``text`` (left-aligned little-endian bytes), ``n`` (the length)
    and ``right`` (the same text right-aligned: FarmHash's end words are wires of it)."""
    _sign_stage(p)
    _dabble(p)
    _text_stages(p)
    # Left-align over two stages (three mux levels, then two): byte k = right[k + s].
    p.stage(text=_shift_down(p.f["right"], p.f["s"], (4, 3, 2)))
    p.stage(drop=["s"], text=_shift_down(p.f["text"], p.f["s"], (1, 0)))


# ---------------------------------------------------------------------------------------------
# FarmHash of 1..20 bytes
# ---------------------------------------------------------------------------------------------


def farm_steps(p: Pipe) -> None:
    """FarmHash Fingerprint64 (golden ``_hash_len_0to16`` and ``_hash_len_17to32``) of the text
    in fields ``text``, ``right``, ``n`` (1..20 bytes): leaves ``h``."""
    text, right, n = p.f.pop("text"), p.f.pop("right"), p.f["n"]
    h0, h1 = text[:64], text[64:128]  # Fetch64(0), Fetch64(8)
    e8 = right[8 * MAX_BYTES - 64 :]  # Fetch64(n - 8): the last 8 bytes
    e16 = right[8 * MAX_BYTES - 128 : 8 * MAX_BYTES - 64]  # Fetch64(n - 16)
    p.f.update(h0=h0, h1=h1, e8=e8, e16=e16)
    # 1..3 bytes: y = s[0] + (s[n >> 1] << 8), z = n + (s[n - 1] << 2): bytes side by side,
    # no carries (n < 4 fits below s[n - 1] << 2).
    y3 = Cat(text[:8], Mux(n[1], text[8:16], text[:8]))
    z3 = Cat(n[:2], e8[56:])
    p.stage(
        le3=n <= 3,
        lt8=n < 8,
        le16=n <= 16,
        a16=(h0 + CITY_K2)[:64],  # 8..16: a = Fetch64(0) + k2
        b18=(h1 + CITY_K2)[:64],  # 17..32: b + k2, rotated in v
        y3=y3,
        z3=z3,
        u4=(Cat(Const(0, 3), h0[:32]) + n)[:64],  # 4..7: n + (Fetch32(0) << 3)
    )
    n, le16, a16, e8 = p.f["n"], p.f["le16"], p.f["a16"], p.f["e8"]
    # Operands of the shared products, each a register of its own (the 8..16 path's add
    # before its multiply would be a second carry chain in the tree's first stage).
    p.stage(
        drop=["e16"],
        cx=Mux(le16, e8.rotate_right(37), e8),  # 8..16: rotr(b, 37) * mul + a; 17..32: c
        ce=a16 & le16.replicate(64),
        dx=Mux(le16, (a16.rotate_right(25) + e8)[:64], p.f["e16"]),  # d: * mul, or * k2
        nd=Mux(le16, n, 0),
        nm=Mux(p.f["le3"], 0, n),  # HashLen16's multiplier: k2 + 2n, or k2 for 1..3 bytes
    )
    start_mul(p, "c", p.f.pop("cx"), CITY_K2, p.f["n"], extra=[p.f.pop("ce")])
    start_mul(p, "d", p.f.pop("dx"), CITY_K2, p.f.pop("nd"))
    start_mul(p, "a32", p.f["h0"], CITY_K1)
    start_mul(p, "y", p.f.pop("y3"), CITY_K2)
    start_mul(p, "z", p.f.pop("z3"), CITY_K0)
    level(p, drop=["a16"])
    a, c, d = p.f["a32"], p.f["c"], p.f["d"]
    p.stage(
        drop=["y", "z", "h0"],
        ab=(a + p.f["h1"])[:64],
        r3=shift_mix(p.f["y"] ^ p.f["z"]),
    )
    a, b18, c, d, ab = p.f.pop("a32"), p.f.pop("b18"), p.f.pop("c"), p.f.pop("d"), p.f.pop("ab")
    u32 = add3(ab.rotate_right(43), c.rotate_right(30), d)  # one carry chain each
    v32 = add3(a, b18.rotate_right(18), c)
    le3, lt8, le16, e8 = p.f["le3"], p.f.pop("lt8"), p.f["le16"], p.f.pop("e8")
    p.stage(
        drop=["h1", "le16"],
        u=Mux(le3, p.f.pop("r3"), Mux(lt8, p.f.pop("u4"), Mux(le16, c, u32))),
        v=Mux(le3, 0, Mux(lt8, e8[32:], Mux(le16, d, v32))),  # 4..7: Fetch32(n - 4)
    )
    hl = HashLen16(p, "h", CITY_K2, "nm")
    hl.step(0, p.f.pop("u"), p.f.pop("v"))
    level(p)
    # 1..3 bytes: the first product is the hash (shift_mix(y * k2 ^ z * k0) * k2).
    p.f["h3"] = p.f["h_a"]
    for k in (1, 2):
        hl.step(k)
        level(p, drop=["nm"] if k == 2 else ())
    p.stage(drop=["h3", "le3", "n"], h=Mux(p.f["le3"], p.f["h3"], p.f["h"]))


# ---------------------------------------------------------------------------------------------
# The components
# ---------------------------------------------------------------------------------------------


class _DecimalBase(wiring.Component):
    """Latency validation, the ``key8`` register and the padding delay of both cores."""

    _OUT: object = 64

    def __init__(self, latency: int | None = None, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        self.depth = self._natural_depth(adder_levels)
        self.latency = lane_latency(latency, self.depth)
        self._MustUse__silence = False
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "o": Out(stream.Signature(self._OUT, always_ready=True)),
                "key8": In(1),
            }
        )

    @classmethod
    def _natural_depth(cls, levels: int | str) -> int:
        scratch = Module()
        scratch._MustUse__silence = True
        return cls._pipeline(scratch, Signal(), Signal(64), Signal(), levels).depth

    @classmethod
    def _pipeline(cls, m, valid, w, key8, levels, behavioural=False) -> Pipe:
        raise NotImplementedError

    def _result(self, p: Pipe) -> Value:
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        # Registered like CityFarmLane's parameters: held stable during a batch (allow 2 cycles
        # after a change), and no input pin drives the first stage's logic directly.
        key8 = Signal(reset_less=True)
        m.d.sync += key8.eq(self.key8)
        p = self._pipeline(m, self.i.valid, self.i.payload, key8, self.adder_levels, self.behavioural)
        assert p.depth == self.depth
        valid, payload = delay(m, "pad", p["valid"], self._result(p), self.latency - p.depth)
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(payload)]
        return m


class Int2Decimal(_DecimalBase):
    """The decimal text of one int64 or int32 per cycle: the bytes of Python's ``str(x)``
    (``tf.strings.as_string``: ``'-'`` for negatives, no leading zeros, ``"0"`` for zero).

    Ports: ``i`` In(stream of 64-bit words, always ready: an int64 in two's complement, or with
    ``key8`` = 0 an int32 in the low half, sign-extended), ``o`` Out(stream of
    :data:`DecimalText`, always ready: ``text`` the characters as little-endian bytes, zero
    beyond ``length``; ``length`` 1..20), ``key8`` In(1) (held stable during a batch; allow 2
    cycles after a change). Latency exactly :attr:`latency` cycles (``latency=None``: the
    natural depth :attr:`depth`; more pads with a delay line); throughput one value per cycle;
    no ``ready``: nothing stalls. Reset clears the ``valid`` bits only (the data registers have
    none). ``multipliers="behavioural"``: the digits by division (simulation only, same depth);
    ``adder_levels`` is accepted for a uniform interface (there are no adder trees here).
    """

    _OUT = DecimalText

    @classmethod
    def _pipeline(cls, m, valid, w, key8, levels, behavioural=False) -> Pipe:
        p = Pipe(m, "i2d", levels=levels, behavioural=behavioural, valid=valid, w=w, k8=key8)
        decimal_steps(p)
        p.f.pop("right")
        return p

    def _result(self, p: Pipe) -> Value:
        return Cat(p["text"], p["n"])


class DecimalFarmLane(_DecimalBase):
    """FarmHash Fingerprint64 of the decimal text of one int64 or int32 per cycle:
    ``farmhash64(str(x).encode())`` (what Keras ``Hashing`` and ``to_hash_bucket_fast`` after
    ``as_string`` hash; the bin is the engine's post-processing).

    Ports: ``i`` In(stream of 64-bit words, always ready; as :class:`Int2Decimal`), ``o``
    Out(stream of 64-bit hashes, always ready), ``key8`` In(1) (1: int64, 0: int32 in the low
    half; held stable during a batch, allow 2 cycles after a change). Latency exactly
    :attr:`latency` cycles (``latency=None``: the natural depth :attr:`depth`; more pads with a
    delay line, as :class:`~offload.hw.cityhash.CityFarmLane`); one key per cycle; no
    ``ready``. Reset clears the ``valid`` bits only. ``adder_levels``, ``multipliers`` as
    :class:`~offload.hw.cityhash.CityFarmLane`.
    """

    _OUT = 64

    @classmethod
    def _pipeline(cls, m, valid, w, key8, levels, behavioural=False) -> Pipe:
        p = Pipe(m, "dfl", levels=levels, behavioural=behavioural, valid=valid, w=w, k8=key8)
        decimal_steps(p)
        farm_steps(p)
        assert not p.busy() and set(p.f) == {"valid", "h"}, set(p.f)
        return p

    def _result(self, p: Pipe) -> Value:
        return p["h"]
