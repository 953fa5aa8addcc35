"""CityHash64 v1.1 (with and without seed) and FarmHash Fingerprint64 cores, bit-exact with
:func:`offload.golden_cityhash.cityhash64` / :func:`offload.golden_cityhash.farmhash64`.

The two hashes are one function up to 32 bytes, so each core computes both, with ``hash``
(:data:`HASH_CITY` / :data:`HASH_FARM`) choosing the result; ``seeded`` (CityHash only)
appends CityHash64WithSeed's ``HashLen16(h - k2, seed)``. ``hash``, ``seeded`` and ``seed``
are held stable during a batch (they are registered: allow 2 cycles after a change).

Multiplies: as the XXH cores (``offload.hw.common``), constant multiplies are adder trees of
shifted copies in LUTs (``multipliers="lut"``) or, for simulation only, one ``*`` delayed by
the tree's depth (``"behavioural"``: cycle-identical at the ports). City's length-dependent
multiplier ``k2 + 2 * len`` (and FarmHash's ``k1 + 2 * (z & 0xff)``) is the constant's tree
plus one gated shifted copy per bit of the variable part: still one tree, no DSP.

* :class:`CityFarmLane`: one fixed 4- or 8-byte key per cycle (``HashLen4to7`` /
  ``HashLen8to16`` forms), the lane form beside :class:`~offload.hw.lanes.XXH64Lane`.
* :class:`CityFarmCore`: records of any length up to ``max_bytes`` streamed as 64-bit words
  (:data:`~offload.hw.xxhash.HashBeat`, the input of :class:`~offload.hw.xxhash.XXH64Core`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from offload.golden_cityhash import CITY_K2, CITY_KMUL

from .common import Pipe, const_mul_terms, set_multiplier_params
from .lanes import delay

__all__ = ["HASH_CITY", "HASH_FARM", "CityFarmLane"]

#: Values of the ``hash`` input.
HASH_CITY = 0
HASH_FARM = 1


# ---------------------------------------------------------------------------------------------
# Multiplies and City's mixing functions as pipeline steps
# ---------------------------------------------------------------------------------------------


def start_mul(p: Pipe, name: str, x, const: int, var=None, vshift: int = 1, extra=()) -> None:
    """Start field ``name = (x * (const + (var << vshift)) + sum(extra)) mod 2**64`` in pipe
    ``p`` (finishes like :meth:`Pipe.mul_tree`; ``var`` a narrow unsigned value or None,
    ``extra`` 64-bit values added in the same tree)."""
    x = p.wire(x, f"{name}_x")
    terms = const_mul_terms(x, const, 64)
    if var is not None:
        var = Value.cast(var)
        for i in range(len(var)):
            s = i + vshift
            terms.append((x[: 64 - s] & var[i].replicate(64 - s), s))
    terms += [(Value.cast(e)[:64], 0) for e in extra]
    if not p.behavioural:
        p.tree(name, terms, 64)
        return
    mul = Const(const, 64) if var is None else (Const(const, 64) + (Value.cast(var) << vshift))[:64]
    prod = (x * mul)[:64]
    for e in extra:
        prod = (prod + Value.cast(e))[:64]
    p._delay(name, prod, p.tree_stages(len(terms)))


def level(p: Pipe, drop=(), **updates) -> None:
    """Register one stage and run until every multiply started before it has finished."""
    p.stage(drop=drop, **updates)
    p.drain()


def shift_mix(v: Value) -> Value:
    return v ^ (v >> 47)


class HashLen16:
    """City's ``HashLen16(u, v, mul)`` as three pipelined multiplies: call :meth:`step` with
    ``k`` = 0 (with ``u``, ``v``), 1, 2, each followed by :func:`level`; the result is field
    ``name``. ``mul`` = ``const + (p[var] << 1)`` (``var``: a field name, or None)."""

    def __init__(self, p: Pipe, name: str, const: int = CITY_KMUL, var: str | None = None):
        self.p, self.name, self.const, self.var = p, name, const, var

    def _mul(self, out: str, x) -> None:
        start_mul(self.p, out, x, self.const, None if self.var is None else self.p[self.var])

    def step(self, k: int, u=None, v=None) -> None:
        p, n = self.p, self.name
        if k == 0:
            p.f[f"{n}_v"] = Value.cast(v)
            self._mul(f"{n}_a", u ^ v)
        elif k == 1:
            a = shift_mix(p.f.pop(f"{n}_a"))
            self._mul(f"{n}_b", p.f.pop(f"{n}_v") ^ a)
        else:
            self._mul(n, shift_mix(p.f.pop(f"{n}_b")))


def seed_steps(p: Pipe, seed: Value, active: Value) -> None:
    """CityHash64WithSeed on field ``h``: ``h = active ? HashLen16(h - k2, seed) : h``."""
    hl = HashLen16(p, "hs")
    p.f["sd"] = Value.cast(active)
    hl.step(0, (p["h"] - CITY_K2)[:64], seed)
    for k in (1, 2):
        level(p)
        hl.step(k)
    level(p)
    p.stage(drop=["hs", "sd"], h=Mux(p["sd"], p["hs"], p["h"]))


def _registered_params(m: Module, component) -> tuple[Signal, Signal]:
    """``seed`` and ``seeded & hash == city``, registered once per batch."""
    seed = Signal(64, name="seed_r", reset_less=True)
    seeded = Signal(name="seeded_r", reset_less=True)
    m.d.sync += [seed.eq(component.seed), seeded.eq(component.seeded & (component.hash == HASH_CITY))]
    return seed, seeded


# ---------------------------------------------------------------------------------------------
# The lane: one fixed 4- or 8-byte key per cycle
# ---------------------------------------------------------------------------------------------


class CityFarmLane(wiring.Component):
    """CityHash64 (v1.1, optionally seeded) or FarmHash Fingerprint64 of one 4- or 8-byte key
    per cycle (both hashes are the same function for at most 32 bytes; ``hash`` only decides
    whether ``seeded`` applies).

    Ports: ``i`` In(stream of 64-bit words, always ready; a 4-byte key is the low half), ``o``
    Out(stream of 64-bit hashes, always ready), ``key8`` In(1) (1: 8-byte keys, 0: 4-byte),
    ``hash`` In(1) (:data:`HASH_CITY` / :data:`HASH_FARM`), ``seeded`` In(1), ``seed`` In(64)
    (all four held stable during a batch; allow 2 cycles after a change). Latency exactly
    :attr:`latency` cycles (``latency=None``: the natural depth :attr:`depth`; more pads with a
    delay line, as :class:`~offload.hw.lanes.XXH64Lane`); one key per cycle.
    """

    def __init__(self, latency: int | None = None, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        self.depth = self._natural_depth(adder_levels)
        if latency is None:
            latency = self.depth
        if not isinstance(latency, int) or isinstance(latency, bool) or latency < self.depth:
            raise ValueError(f"latency must be at least {self.depth}, not {latency!r}")
        self._MustUse__silence = False
        self.latency = latency
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "o": Out(stream.Signature(64, always_ready=True)),
                "key8": In(1),
                "hash": In(1),
                "seeded": In(1),
                "seed": In(64),
            }
        )

    @classmethod
    def _natural_depth(cls, levels: int | str) -> int:
        scratch = Module()
        scratch._MustUse__silence = True
        return cls._pipeline(scratch, Signal(), Signal(64), Signal(), Signal(64), Signal(), levels).depth

    @staticmethod
    def _pipeline(m, valid, w, key8, seed, seeded, levels, behavioural=False) -> Pipe:
        p = Pipe(
            m,
            "cfl",
            levels=levels,
            behavioural=behavioural,
            valid=valid,
            k8=key8,
            w=w,
            n=Mux(key8, Const(8, 4), Const(4, 4)),
        )
        # 8 bytes (HashLen0to16, len >= 8): a = w + k2, b = w, mul = k2 + 2 * len;
        # c = rotr(b, 37) * mul + a, d = (rotr(a, 25) + b) * mul, then HashLen16(c, d, mul).
        a = (p["w"] + CITY_K2)[:64]
        start_mul(p, "c", p["w"].rotate_right(37), CITY_K2, p["n"], extra=[a])
        start_mul(p, "d", (a.rotate_right(25) + p["w"])[:64], CITY_K2, p["n"])
        level(p)
        # 4 bytes (len 4..7): HashLen16(len + (a << 3), a, mul) with a = the key's 32 bits.
        w32 = p["w"][:32]
        u = Mux(p["k8"], p["c"], (Cat(Const(0, 3), w32) + p["n"])[:64])
        v = Mux(p["k8"], p["d"], w32)
        hl = HashLen16(p, "h", CITY_K2, "n")
        p.f = {k: x for k, x in p.f.items() if k not in ("c", "d", "w")}
        hl.step(0, u, v)
        for k in (1, 2):
            level(p)
            hl.step(k)
        level(p, drop=["k8", "n"])
        seed_steps(p, seed, seeded)
        return p

    def elaborate(self, platform):
        m = Module()
        seed, seeded = _registered_params(m, self)
        key8 = Signal(reset_less=True)
        m.d.sync += key8.eq(self.key8)
        p = self._pipeline(
            m, self.i.valid, self.i.payload, key8, seed, seeded, self.adder_levels, self.behavioural
        )
        assert p.depth == self.depth
        valid, data = delay(m, "pad", p["valid"], p["h"], self.latency - p.depth)
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(data)]
        return m
