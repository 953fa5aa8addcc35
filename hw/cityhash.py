"""CityHash64 v1.1 (with and without seed) and FarmHash Fingerprint64 cores, bit-exact with
:func:`offload.golden_cityhash.cityhash64` / :func:`offload.golden_cityhash.farmhash64`.

The two hashes are one function up to 32 bytes. A core computes the hashes its ``hashes``
build parameter names: ``("city", "farm")`` (the default) both, with ``hash``
(:data:`HASH_CITY` / :data:`HASH_FARM`) choosing the result; ``("city",)`` or ``("farm",)``
one (``hash`` is then ignored). ``seeded`` (CityHash only) appends CityHash64WithSeed's
``HashLen16(h - k2, seed)``. ``hash``, ``seeded`` and ``seed`` are held stable during a batch
(they are registered: allow 2 cycles after a change).

Multiplies: as the XXH cores (``offload.hw.common``), constant multiplies are adder trees of
shifted copies in LUTs (``multipliers="lut"``) or, for simulation only, one ``*`` delayed by
the tree's depth (``"behavioural"``: cycle-identical at the ports). City's length-dependent
multiplier ``k2 + 2 * len`` (and FarmHash's ``k1 + 2 * (z & 0xff)``) is the constant's tree
plus one gated shifted copy per bit of the variable part: still one tree, no DSP.

Sharing, what makes the record core fit an ECP5-85: a record takes one length path, so the
paths' products of a level share multipliers (each operand picked by length); a record of
33..64 bytes takes 5 or more words and one over 64 bytes 9 or more, so at one word per cycle
such records reach a stage only they use at least 5 (9) cycles apart: there, products of one
record that enter within that many cycles share a multiplier pipeline (:class:`_MulPool`, as
``xxh64_finalize`` shares one among four accumulators) and fields wait in one register each
(:class:`_Hold`) instead of riding a register per stage. The chunk loop's rounds fire 8+
cycles apart: their four products share two multipliers.

* :class:`CityFarmLane`: one fixed 4- or 8-byte key per cycle (``HashLen4to7`` /
  ``HashLen8to16`` forms), the lane form beside :class:`~offload.hw.lanes.XXH64Lane`.
* :class:`CityFarmCore`: records of any length up to ``max_bytes`` streamed as 64-bit words
  (:data:`~offload.hw.xxhash.HashBeat`, the input of :class:`~offload.hw.xxhash.XXH64Core`).

Neither uses DSP blocks; the record core shares its multipliers between the products of
different stages (without the sharing the core for both hashes did not fit an LFE5U-85F). Area,
latency and Fmax per configuration: docs/verification.md, the framework-hash cores' table.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from offload.golden_cityhash import CITY_K0, CITY_K1, CITY_K2, CITY_KMUL, FARM_SEED, MASK64

from .common import Pipe, Term, const_mul_terms, keep_copies, set_multiplier_params, term_value
from .lanes import delay, lane_latency
from .xxhash import HashBeat

__all__ = ["HASH_CITY", "HASH_FARM", "HASHES", "CityFarmLane", "CityFarmCore"]

#: Values of the ``hash`` input.
HASH_CITY = 0
HASH_FARM = 1


# ---------------------------------------------------------------------------------------------
# Multiplies and City's mixing functions as pipeline steps
# ---------------------------------------------------------------------------------------------


def carry_save_level(terms: list[Term], width: int) -> list[Term]:
    """Triples of terms with neighbouring shifts as two terms each, their sum and their shifted
    majority (one LUT level, no carry chain; as :func:`~offload.hw.common.add3_terms` without
    its adder: the bits below the middle shift are copied)."""
    terms = sorted(terms, key=lambda t: -t[1])
    out: list[Term] = []
    i = 0
    while len(terms) - i >= 3:
        out += _carry_save3(terms[i], terms[i + 1], terms[i + 2], width)
        i += 3
    return out + terms[i:]


def _carry_save3(a: Term, b: Term, c: Term, width: int) -> list[Term]:
    (va, sa), (vb, sb), (vc, sc) = sorted([a, b, c], key=lambda t: t[1])
    d, hi_w = sb - sa, width - sb
    if hi_w <= 0:
        return [(va, sa)]
    low = va[:d] if len(va) >= d else Cat(va, Const(0, d - len(va)))
    y = Cat(vb, Const(0, hi_w))[:hi_w]
    if len(va) <= d:  # a ends below b: one term by concatenation
        return [(Cat(low, y), sa), (vc, sc)]
    x = Cat(va[d:], Const(0, hi_w))[:hi_w]
    z = term_value((vc, sc - sb), hi_w)
    maj = (x & y) | (x & z) | (y & z)
    return [(Cat(low, x ^ y ^ z), sa)] + ([(maj[: hi_w - 1], sb + 1)] if hi_w > 1 else [])


def start_mul(
    p: Pipe, name: str, x, const: int, var=None, vshift: int = 1, extra=(), more=(), csa_first: bool = False
) -> int:
    """Start field ``name = (x * (const + (var << vshift)) + sum(extra)) mod 2**64`` in pipe
    ``p`` (finishes like :meth:`Pipe.mul_tree`; ``var`` a narrow unsigned value or None,
    ``extra`` 64-bit values and ``more`` products ``(x2, const2)`` added in the same tree: an add
    after a product costs no carry chain of its own). ``csa_first``: the first stage is a
    carry-save level (:func:`carry_save_level`: no carry chain behind the logic that makes
    ``x``), the adder tree starts at the next. Returns the stages it takes."""
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
    if csa_first:
        terms = carry_save_level(terms, 64)
    stages = int(csa_first) + p.tree_stages(len(terms))
    if not p.behavioural:
        if not csa_first:
            p.tree(name, terms, 64)
            return stages
        for i, (v, _) in enumerate(terms):
            p.f[f"{name}_cs{i}"] = Value.cast(v)
        shifts = [sh for _, sh in terms]

        def tree() -> None:  # the adder tree over the registered carry-save terms
            p.tree(name, [(p.f.pop(f"{name}_cs{i}"), sh) for i, sh in enumerate(shifts)], 64)

        p.at(p.depth + 1, tree)
        return stages
    mul = Const(const, 64) if var is None else (Const(const, 64) + (Value.cast(var) << vshift))[:64]
    prod = (x * mul)[:64]
    for e in extra:
        prod = (prod + Value.cast(e))[:64]
    for x2, c2 in more:
        prod = (prod + Value.cast(x2) * c2)[:64]
    p._delay(name, prod, stages)
    return stages


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
    """CityHash64WithSeed on field ``h``: ``h = active ? HashLen16(h - k2, seed) : h``.
    ``h - k2`` has a stage of its own: one carry chain a stage, not the subtraction's and the
    first product's first adder's."""
    hl = HashLen16(p, "hsd")
    p.f["sd"] = Value.cast(active)
    p.stage(hk2=(p["h"] - CITY_K2)[:64])
    hl.step(0, p.f.pop("hk2"), seed)
    for k in (1, 2):
        level(p)
        hl.step(k)
    level(p)
    p.stage(drop=["hsd", "sd"], h=Mux(p["sd"], p["hsd"], p["h"]))


#: The hashes a core can compute (its ``hashes`` parameter).
HASHES = ("city", "farm")


def check_hashes(hashes) -> tuple[str, ...]:
    """Validate a core's ``hashes``; returns them in :data:`HASHES` order."""
    if (
        not isinstance(hashes, tuple)
        or not hashes
        or not all(isinstance(h, str) for h in hashes)
        or len(set(hashes)) != len(hashes)
        or not set(hashes) <= set(HASHES)
    ):
        raise ValueError(f"hashes must be ('city', 'farm'), ('city',) or ('farm',), not {hashes!r}")
    return tuple(h for h in HASHES if h in hashes)


def _registered_params(m: Module, component, hashes: tuple[str, ...]) -> tuple[Signal, Signal]:
    """``seed`` and ``seeded & hash == city`` (a CityHash-only core: ``seeded``), registered
    once per batch."""
    seed = Signal(64, name="seed_r", reset_less=True)
    seeded = Signal(name="seeded_r", reset_less=True)
    city = component.hash == HASH_CITY if len(hashes) == 2 else Const(1, 1)
    m.d.sync += [seed.eq(component.seed), seeded.eq(component.seeded & city)]
    return seed, seeded


# ---------------------------------------------------------------------------------------------
# The lane: one fixed 4- or 8-byte key per cycle
# ---------------------------------------------------------------------------------------------


class CityFarmLane(wiring.Component):
    """CityHash64 (v1.1, optionally seeded) or FarmHash Fingerprint64 of one 4- or 8-byte key
    per cycle (both hashes are the same function for at most 32 bytes; ``hash`` only decides
    whether ``seeded`` applies). ``hashes``: as :class:`CityFarmCore`'s (``("farm",)``: no
    seed steps; ``hash`` is ignored by a single-hash lane).

    Ports: ``i`` In(stream of 64-bit words, always ready; a 4-byte key is the low half), ``o``
    Out(stream of 64-bit hashes, always ready), ``key8`` In(1) (1: 8-byte keys, 0: 4-byte),
    ``hash`` In(1) (:data:`HASH_CITY` / :data:`HASH_FARM`), ``seeded`` In(1), ``seed`` In(64)
    (all four held stable during a batch; allow 2 cycles after a change). Latency exactly
    :attr:`latency` cycles (``latency=None``: the natural depth :attr:`depth`; more pads with a
    delay line, as :class:`~offload.hw.lanes.XXH64Lane`); one key per cycle.
    """

    def __init__(
        self,
        latency: int | None = None,
        adder_levels: int | str = "csa",
        multipliers: str = "lut",
        hashes: tuple[str, ...] = HASHES,
    ):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        self.hashes = check_hashes(hashes)
        self.depth = self._natural_depth(adder_levels, self.hashes)
        self.latency = lane_latency(latency, self.depth)
        self._MustUse__silence = False
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
    def _natural_depth(cls, levels: int | str, hashes: tuple[str, ...] = HASHES) -> int:
        scratch = Module()
        scratch._MustUse__silence = True
        z = Signal(64)
        return cls._pipeline(scratch, Signal(), z, Signal(), z, Signal(), levels, hashes=hashes).depth

    @staticmethod
    def _pipeline(m, valid, w, key8, seed, seeded, levels, behavioural=False, hashes=HASHES) -> Pipe:
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
        # (a in a stage of its own, d's operand, a second addition after it, in the next: one
        # carry chain a stage)
        # (4 bytes: u = len + (a << 3) made here too, not in front of its product's adder)
        p.stage(a=(p["w"] + CITY_K2)[:64], u4=(Cat(Const(0, 3), p["w"][:32]) + p["n"])[:64])
        p.stage(dx=(p["a"].rotate_right(25) + p["w"])[:64])
        a = p.f.pop("a")
        start_mul(p, "c", p["w"].rotate_right(37), CITY_K2, p["n"], extra=[a])
        start_mul(p, "d", p.f.pop("dx"), CITY_K2, p["n"])
        level(p)
        # 4 bytes (len 4..7): HashLen16(len + (a << 3), a, mul) with a = the key's 32 bits.
        w32 = p["w"][:32]
        u = Mux(p["k8"], p["c"], p.f.pop("u4"))
        v = Mux(p["k8"], p["d"], w32)
        hl = HashLen16(p, "h", CITY_K2, "n")
        p.f = {k: x for k, x in p.f.items() if k not in ("c", "d", "w")}
        hl.step(0, u, v)
        for k in (1, 2):
            level(p)
            hl.step(k)
        level(p, drop=["k8", "n"])
        if "city" in hashes:
            seed_steps(p, seed, seeded)
        return p

    def elaborate(self, platform):
        m = Module()
        seed, seeded = _registered_params(m, self, self.hashes)
        key8 = Signal(reset_less=True)
        m.d.sync += key8.eq(self.key8)
        p = self._pipeline(
            m,
            self.i.valid,
            self.i.payload,
            key8,
            seed,
            seeded,
            self.adder_levels,
            self.behavioural,
            self.hashes,
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


def carry_save(*vals) -> tuple[Value, Value]:
    """Three or four addends as two of the same sum mod 2**64 (carry-save levels, no carry
    chain: :func:`add3` and :func:`add4` without their adder)."""
    a, b, c, *rest = (Cat(Value.cast(v), Const(0, 64))[:64] for v in vals)
    s, t = a ^ b ^ c, Cat(Const(0, 1), ((a & b) | (a & c) | (b & c))[:63])
    for d in rest:
        s, t = s ^ t ^ d, Cat(Const(0, 1), ((s & t) | (s & d) | (t & d))[:63])
    return s, t


def add4(a, b, c, d) -> Value:
    """``a + b + c + d`` mod 2**64 with one carry chain (two carry-save levels in front)."""
    a, b, c = (Cat(Value.cast(v), Const(0, 64))[:64] for v in (a, b, c))
    return add3(a ^ b ^ c, Cat(Const(0, 1), ((a & b) | (a & c) | (b & c))[:63]), d)


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
    remainder, ``rems[k]`` = ``(len - 1) % 8`` registered with the beat, a copy per end word).
    Bytes before the record's start are leftovers of earlier records: the paths that read them
    are not taken for such short records."""

    def __init__(self, m: Module, name: str, valid, b, cur, chunk0, rems):
        self.win = [Signal(64, name=f"{name}_win{k}", reset_less=True) for k in range(8)]
        self.heads = [Signal(64, name=f"{name}_head{k}", reset_less=True) for k in range(4)]
        with m.If(valid):
            m.d.sync += [self.win[k].eq(self.win[k + 1]) for k in range(7)] + [self.win[7].eq(b.data)]
            for k in range(4):
                with m.If(chunk0 & (cur == k)):
                    m.d.sync += self.heads[k].eq(b.data)
        self.b, self.cur, self.chunk0 = b, cur, chunk0
        nine = self.win + [b.data]
        # rems[k]: (len - 1) % 8, registered with the beat (a copy per word: no 512-load net);
        # bits 8 * that, + 8 below
        shifts = [Cat(Const(0, 3), r) for r in rems]
        self.ends = [Cat(nine[k], nine[k + 1])[8:].bit_select(shifts[k], 64) for k in range(8)]

    def head(self, k: int) -> Value:
        return Mux(self.chunk0 & (self.cur == k), self.b.data, self.heads[k])

    def end(self, k: int) -> Value:
        return self.ends[k]


#: Records over 64 bytes take at least 9 words, so at one word per cycle two of them reach a
#: stage of the paths only they take (the start state, the long finishes) at least 9 cycles
#: apart: what :class:`_Hold` and :class:`_MulPool` rely on there. The chunk loop's rounds
#: fire at least ``CityFarmCore.ROUND`` = 8 cycles apart.
LONG_GAP = 9


class _Hold:
    """Fields of a pipe whose records are at least ``gap`` cycles apart, each kept in one
    register instead of riding one register per stage: a register loaded when the record's
    ``valid`` is set at depth ``d`` keeps the value until the next record reaches ``d``, so it
    reads right at depths ``d + 1 .. d + gap``; a copy loaded at ``d + gap`` takes over after
    that (until :meth:`drop`)."""

    def __init__(self, p: Pipe, gap: int | None = None, enable=None):
        self.p, self.gap = p, LONG_GAP if gap is None else gap
        #: the records that are ``gap`` apart (a callable: their flag at the current depth)
        self.enable = enable or (lambda: p["valid"])
        self.regs: dict[str, list[tuple[Signal, int]]] = {}

    def hold(self, *names: str) -> None:
        for k in names:
            self.regs[k] = []
            self._load(k, self.p.f.pop(k))

    def _load(self, k: str, v) -> None:
        p = self.p
        r = Signal(Value.cast(v).shape(), name=f"{p.name}_hold{p.depth}_{k}", reset_less=True)
        p.m.d.sync += r.eq(Mux(self.enable(), v, r))
        self.regs[k].append((r, p.depth))
        p.at(p.depth + self.gap, lambda: self._renew(k, r))

    def _renew(self, k: str, r: Signal) -> None:
        if k in self.regs and self.regs[k][-1][0] is r:
            self._load(k, r)

    def __getitem__(self, k: str) -> Signal:
        for r, d in reversed(self.regs[k]):
            if d < self.p.depth <= d + self.gap:
                return r
        raise AssertionError(f"{self.p.name}: {k} read at depth {self.p.depth}")

    def drop(self, *names: str) -> None:
        for k in names:
            del self.regs[k]

    def get(self, k: str, pop: bool = False) -> Value:
        """Field ``k`` of the pipe, or held (``pop``: drop it)."""
        if k in self.p.f:
            return self.p.f.pop(k) if pop else self.p[k]
        v = self[k]
        if pop:
            self.drop(k)
        return v


class _MulPool:
    """Products ``x * (const + (v << 1)) + sum(extras)`` of a pipe whose records are at least
    ``gap`` cycles apart, on as few multiplier pipelines as that allows (as ``xxh64_finalize``
    shares one among the four accumulators of long records). :meth:`issue` starts a product at
    the pipe's current depth on the first pipeline whose other products of the record enter it
    less than ``gap`` cycles before or after (so two records never meet in it), or on a new
    one; the product becomes field ``dest`` when it leaves. The operands of the products that
    share a pipeline are picked by their records' ``valid`` (:meth:`close`, once every product
    is issued), then registered (``register``; without, the pick feeds a carry-save level, no
    carry chain, in the same cycle: a cycle less where that level does not add a stage).
    ``gate``: field of the pipe that says a record needs a product (default ``valid``), best a
    field of its own: its register at each depth then drives the picks only and is placed by
    them, not one net across the device to them and every other reader of ``valid``."""

    def __init__(
        self, p: Pipe, name: str, const: int, var_width=0, extras=0, gap=None, register=True, gate="valid"
    ):
        self.p, self.name, self.const, self.register, self.gate = p, name, const, register, gate
        self.gap = LONG_GAP if gap is None else gap
        self.var_width, self.extras = var_width, extras
        self.units: list[dict] = []

    def _unit(self) -> dict:
        n = f"{self.name}{len(self.units)}"
        sig = {"x": Signal(64, name=f"{n}_x")}
        if self.var_width:
            sig["v"] = Signal(self.var_width, name=f"{n}_v")
        sig.update({f"e{i}": Signal(64, name=f"{n}_e{i}") for i in range(self.extras)})
        q = Pipe(self.p.m, n, levels=self.p.levels, behavioural=self.p.behavioural, **sig)
        if self.register:
            q.stage()
        extra = [q[f"e{i}"] for i in range(self.extras)]
        start_mul(q, "r", q["x"], self.const, q.f.get("v"), extra=extra, csa_first=not self.register)
        level(q, drop=list(sig))
        unit = {"sig": sig, "feeds": [], "at": set(), "out": q["r"], "depth": q.depth}
        self.units.append(unit)
        return unit

    def _fits(self, unit: dict, d: int) -> bool:
        at = unit["at"] | {d}
        return d not in unit["at"] and max(at) - min(at) < self.gap

    def issue(self, dest: str, x, v=None, extra=(), active=None) -> int:
        """Start ``dest`` (``active``: the record needs it, default the pool's ``gate`` field);
        returns the depth where it is a field."""
        p, d = self.p, self.p.depth
        unit = next((u for u in self.units if self._fits(u, d)), None) or self._unit()
        unit["at"].add(d)
        vals = {"x": x, "v": v, **{f"e{i}": e for i, e in enumerate(extra)}}
        unit["feeds"].append((d, p[self.gate] if active is None else active, vals))
        out, t = unit["out"], d + unit["depth"]
        p.at(t, lambda: p.f.__setitem__(dest, out))
        return t

    def issue_from(self, q: Pipe, dest: str, x) -> int:
        """Start ``dest`` of another pipe ``q`` on the first pipeline, at ``q``'s current depth
        (the caller shows that no record of ``q`` ever enters it in the same cycle as one of
        this pool's); returns the depth of ``q`` where it is a field."""
        unit = self.units[0]
        unit["feeds"].append((1 << 30, q["valid"], {"x": x}))  # never the default pick
        out, t = unit["out"], q.depth + unit["depth"]
        q.at(t, lambda: q.f.__setitem__(dest, out))
        return t

    def close(self) -> None:
        """Connect the inputs: a product passes when its record is there (its ``active``), the
        pipeline's latest one when no other's is. The latest is the last to be computed (often
        out of a carry chain): one mux level behind it, the others' picks made beside it."""
        for unit in self.units:
            feeds = sorted(unit["feeds"], key=lambda fd: fd[0])
            for k, s in unit["sig"].items():
                last = feeds[-1][2].get(k)
                acc = Const(0, len(s)) if last is None else Value.cast(last)
                for _, act, vals in reversed(feeds[:-1]):
                    acc = Mux(act, 0 if vals.get(k) is None else vals[k], acc)
                self.p.m.d.comb += s.eq(acc)


def _gate_field(p: Pipe, valid) -> None:
    """Field ``gate`` of a pipe at depth 1: its input ``valid`` again, in a register of its own
    (``keep``: synthesis would merge it with ``valid``'s), for a :class:`_MulPool`'s picks."""
    assert p.depth == 1, p.depth
    g = Signal(name=f"{p.name}_gate", attrs={"keep": 1})
    p.m.d.sync += g.eq(valid)
    p.f["gate"] = g


def _until(p: Pipe, depth: int) -> None:
    while p.depth < depth:
        p.stage()


class CityFarmCore(wiring.Component):
    """CityHash64 v1.1 (optionally seeded) or FarmHash Fingerprint64 of records of up to
    ``max_bytes`` bytes, one 64-bit word per cycle.

    Ports: ``i`` In(stream of :data:`~offload.hw.xxhash.HashBeat`, always ready: the input of
    :class:`~offload.hw.xxhash.XXH64Core`), ``o`` Out(stream of 64-bit hashes, always ready),
    ``hash``, ``seeded``, ``seed`` (as :class:`CityFarmLane`), ``overflow`` Out(1) (sticky: a
    record took more than :attr:`span` = ``max_bytes / 8`` cycles from its first to its last
    word, i.e. it was longer than ``max_bytes`` or too spread out by idle cycles; its hash is
    wrong, except in a FarmHash-only core, which flags the same records but needs no bound).
    Latency exactly :attr:`latency` cycles from a record's last word; one word per cycle for
    any mix of lengths (a record of ``n`` bytes takes ``max(1, ceil(n / 8))`` cycles); no
    ``ready``: nothing ever stalls. A record's ``length`` must match its words (the engine's
    parser guarantees it): the long paths share multipliers because records over 64 bytes
    take 9 or more cycles each.

    ``hashes``: the hashes the core computes, ``("city", "farm")`` (``hash`` chooses per
    batch), ``("city",)`` or ``("farm",)`` (``hash`` is ignored: a CityHash-only core applies
    ``seeded`` whatever ``hash`` says; a FarmHash-only core ignores ``seeded`` and ``seed``).

    Why a delay line: CityHash seeds its chunk loop from the record's *last* 64 bytes, then
    runs it from the first byte, so no result can be computed while the record streams in.
    A core with CityHash therefore (1) computes each record's loop start state when its last
    word arrives (City: from its last 64 bytes; FarmHash: constants and the first word) and
    stores it in a memory at the slot of the record's first word in (2) a ring buffer that
    delays the stream by :attr:`delay` cycles (``max_bytes / 8`` words plus that computation),
    then (3) runs the stream again, out of the ring, through a streaming core: the chunk loop
    (one round per 64 bytes, a round takes at most 8 cycles and so keeps up with one word per
    cycle) and the finaliser of every length path (0..16, 17..32, 33..64, the long finish),
    which starts on the record's last word and picks the path by length. FarmHash starts its
    loop from constants and the first word, so a FarmHash-only core has no ring (``delay`` 0):
    the streaming core runs on the input.

    Timing (ECP5, 100 MHz): the input beat is registered first (:attr:`INPUT_STAGE`; the ring's
    read data twice, within :attr:`delay`: a register beside the RAM, then the beat's), its
    byte shift's select beside it in copies; a stage has one carry chain at most, with a few
    LUT levels (the length compares are registers, the products behind picked operands start
    with a carry-save level). :attr:`latency` = :attr:`INPUT_STAGE` + :attr:`delay` + the
    finisher's depth.
    """

    ROUND = 8  # a chunk's 8 words: the loop round may take 8 cycles
    INPUT_STAGE = 1  # the input's register (its beat drives hundreds of loads)

    def __init__(
        self,
        max_bytes: int = 1024,
        adder_levels: int | str = "csa",
        multipliers: str = "lut",
        hashes: tuple[str, ...] = HASHES,
    ):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or not 64 < max_bytes <= 1 << 16:
            raise ValueError(f"max_bytes must be an int between 65 and 65536, not {max_bytes!r}")
        self.hashes = check_hashes(hashes)
        self._MustUse__silence = False
        self.max_bytes = max_bytes
        #: cycles from a record's first to its last word at most (``overflow`` beyond)
        self.span = -(-max_bytes // 8)
        scratch = Module()
        scratch._MustUse__silence = True
        z64 = Signal(64)
        self.info_depth = 0
        if "city" in self.hashes:
            self.info_depth = self._info_pipe(
                scratch,
                Signal(),
                Signal(16),
                Signal(32),
                Signal(),
                z64,
                [z64] * 8,
                adder_levels,
                False,
                self.hashes,
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
            False,
            self.hashes,
        )
        self.fin_depth = fin.depth
        # A record's start state is written info_depth cycles after its last word and must be in
        # the memory before the ring reads the record's first word again (one cycle before that
        # word leaves the ring): span + info_depth + 2 cycles after the first word at the latest.
        self.delay = self.span + self.info_depth + 2 if "city" in self.hashes else 0
        self.latency = self.INPUT_STAGE + self.delay + self.fin_depth
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
    def _info_pipe(m, valid, slot, n, farm, h0, ends, levels, behavioural=False, hashes=HASHES) -> Pipe:
        """The chunk loop's start state of a record over 64 bytes, from its last beat (golden
        ``_city_long`` and ``_farm_long`` before their loops); fields ``slot`` and
        :data:`STATE`. Such records are 9+ cycles apart: the words wait in :class:`_Hold`
        registers and the three products of ``z`` share one multiplier."""
        p = Pipe(m, "inf", levels=levels, behavioural=behavioural, valid=valid, slot=slot)
        p.f.update({f"e{k}": ends[k] for k in range(8)})
        p.f.update(n=Value.cast(n), h0=Value.cast(h0), farm=farm)
        p.stage()  # the words as they arrived (the end words through a byte shift)
        hd = _Hold(p)
        E = [p[f"e{k}"] for k in range(8)]
        fx, fy, fz = _farm_start()
        h0 = p.f.pop("h0")
        p.f["y"] = (E[6] + E[1])[:64]
        p.f["yk1"] = add3(E[6], E[1], CITY_K1)  # the w's weak hash's a: one carry chain ahead
        if len(hashes) == 2:
            p.f["fx"] = (h0 + fx)[:64]
        start_mul(p, "x", E[3], CITY_K1, extra=[h0])
        zm = _MulPool(p, "infz", CITY_KMUL)
        t = zm.issue("z_a", (E[2] + p["n"])[:64] ^ E[5])
        hd.hold(*[f"e{k}" for k in range(8)], "n", "y", "yk1", *(["fx"] if len(hashes) == 2 else []))
        _until(p, t)
        t = zm.issue("z_b", hd["e5"] ^ shift_mix(p.f.pop("z_a")))
        hd.hold("x")
        _until(p, t)
        t = zm.issue("z", shift_mix(p.f.pop("z_b")))
        _until(p, t)
        zm.close()
        wv, ww = Weak(p, "v"), Weak(p, "w")
        e = [hd[f"e{k}"] for k in range(8)]
        wv.step(0, e[0:4], hd["n"], (p["z"],))
        ww.step(0, e[4:8], hd["yk1"], (e[3],))
        for k in (1, 2):
            p.stage()
            wv.step(k)
            ww.step(k)
        upd = {"x": hd["x"], "y": hd["y"]}
        if len(hashes) == 2:
            farm = p["farm"]
            upd = {
                "x": Mux(farm, hd["fx"], hd["x"]),
                "y": Mux(farm, fy, hd["y"]),
                "z": Mux(farm, fz, p["z"]),
                **{k: Mux(farm, 0, p[k]) for k in ("v0", "v1", "w0", "w1")},
            }
        p.stage(drop=["farm"], **upd)
        assert not p.busy()
        return p

    # ------------------------------------------------------------------ the chunk round

    @staticmethod
    def _round(m, fire, st, d, levels, behavioural=False, k1_out=None) -> tuple[Pipe, list[Value]]:
        """One round of the chunk loop (golden ``_chunk_round`` with ``mul = k1``) over words
        ``d`` from state ``st``; returns the pipe and the new state as values of its last
        stage (the caller registers them: :attr:`round_depth` is the pipe's depth + 1). Rounds
        fire 8+ cycles apart, so the four products share two multipliers: ``z`` and ``v1``'s
        (no addition in front) enter them in the round's first cycle, ``x`` and ``y``'s (from
        sums made in that cycle) in the next. The adds of the weak hashes that do not depend
        on the products are made ahead, and the ones right after a product ride in its adder
        tree or wait in :class:`_Hold` registers, so a round fits in 7 cycles."""
        x, y, z, v0, v1, w0, w1 = st
        # A round must fit in 8 cycles whatever adder_levels: carry-save stages (three terms a
        # stage) for its products, as the XXH stripe loops.
        p = Pipe(m, "rd", levels="csa", behavioural=behavioural, valid=fire, v0=v0, w1=w1)
        gap = CityFarmCore.ROUND
        mxz = _MulPool(p, "rdxz", CITY_K1, gap=gap)
        mya = _MulPool(p, "rdya", CITY_K1, extras=2, gap=gap)
        mxz.issue("Z", (z + w0)[:64].rotate_right(33))
        mya.issue("VA", v1, extra=[d[0]])
        p.f.update({f"d{k}": d[k] for k in (3, 5, 6, 7)})
        p.f.update(
            txy=(x + y)[:64],
            tvd=(v0 + d[1])[:64],
            ty=(y + v1)[:64],
            q=(w0 + d[3])[:64],
            d12=(d[1] + d[2])[:64],
            d27=(d[2] + d[7])[:64],
            d56=(d[5] + d[6])[:64],
            w1d4=(w1 + d[4])[:64],
        )
        p.stage()
        mxz.issue("X", (p["txy"] + p["tvd"])[:64].rotate_right(37))
        t = mya.issue("Y", (p["ty"] + p["d6"])[:64].rotate_right(42), extra=[p["v0"], p["d5"]])
        hd = _Hold(p, gap)
        hd.hold("w1", "q", "d12", "d27", "d56", "w1d4", "d3", "d7")
        for k in ("txy", "tvd", "ty", "v0", "d5", "d6"):
            p.f.pop(k)
        if k1_out is None:
            mxz.close()
        else:  # the caller lends it to CityHash's long finish, then closes it
            k1_out.append(mxz)
        mya.close()
        _until(p, t - 1)  # Z and VA are here
        p.stage(a2=(p["VA"] + hd["d12"])[:64], WA=(p["Z"] + hd["w1d4"])[:64])
        xp = p["X"] ^ hd["w1"]
        wa = p["WA"]
        p.stage(
            drop=["X"],
            xp=xp,
            b1=add3(xp, hd["q"], p["VA"]).rotate_right(21),
            v0=(p["a2"] + hd["d3"])[:64],
            wb1=add3(p["Y"], wa, hd["d27"]).rotate_right(21),
            wa2=(wa + hd["d56"])[:64],
        )
        wa2, a2 = p["wa2"], p["a2"]
        new = [
            p["Z"],
            p["Y"],
            p["xp"],
            p["v0"],
            add3(p["b1"], a2.rotate_right(44), p["VA"]),
            (wa2 + hd["d7"])[:64],
            add3(p["wb1"], wa2.rotate_right(44), p["WA"]),
        ]
        assert not p.busy()
        return p, new

    # ------------------------------------------------------------------ the finisher

    @staticmethod
    def _finisher(
        m,
        valid,
        n,
        farm,
        heads,
        ends,
        st,
        seed,
        seeded,
        round_depth,
        levels,
        behavioural=False,
        hashes=HASHES,
        k1=None,
    ):
        """Every length path of the core's hashes from a record's last beat (``heads``: its
        first four words, ``ends``: the eight words ending at its last byte; ``st``: the chunk
        loop's state registers, read ``round_depth - 1`` or more cycles later, when the
        record's last round has written them): the paths of up to 64 bytes in one pipeline,
        the long finish of each hash in a pipeline of its own (:func:`_farm_long`,
        :func:`_city_long`), the result picked by length and ``farm``; then the seed."""
        city = "city" in hashes
        p = Pipe(m, "fin", levels=levels, behavioural=behavioural, valid=valid, n=n, farm=farm)
        p.f.update({f"h{k}": heads[k] for k in range(4)})
        p.f.update({f"e{k}": ends[k] for k in range(4, 8)})
        lvalid = Value.cast(valid) & (Value.cast(n) > 64)
        longs = {}
        if "farm" in hashes:
            longs["farm"] = _farm_long(m, lvalid, n, ends, st, round_depth, levels, behavioural)
        if city:
            longs["city"] = _city_long(m, lvalid, st, round_depth, levels, behavioural, k1)
        # The words come from the ring's memory through the end words' byte shift: register
        # them before any arithmetic, and a + k2 of 0..16 bytes before its multiplies.
        p.stage()
        n = p["n"]
        # n7: mul = k2 + 2 * len; the short paths' compares (len <= 64 there) as registers, read
        # by a hundred or more selects each
        n7 = n[:7]
        p.stage(
            drop=["n"],
            n7=n7,
            n0=n7 == 0,
            le3=n7 <= 3,
            le16=n7 <= 16,
            le32=n7 <= 32,
            lng=n > 64,
            b33=n > 32,  # the records that share the 33..64 paths' last multipliers
            a16=(p["h0"] + CITY_K2)[:64],
            h1k=(p["h1"] + CITY_K2)[:64].rotate_right(18),
        )
        _short(p, city, "farm" in hashes)
        depth = max([p.depth] + [q.depth for q in longs.values()])
        for q in [p, *longs.values()]:
            _until(q, depth)
        hl = [q.f.pop("h") for q in longs.values()]
        hlong = Mux(p["farm"], hl[0], hl[1]) if len(hl) == 2 else hl[0]
        short = ["hshort", "n7", "n0", "le3", "le16", "le32"]
        p.stage(drop=["lng", "b33", "farm", *short], h=Mux(p["lng"], hlong, p["hshort"]))
        if city:
            seed_steps(p, seed, seeded)
        assert not p.busy() and set(p.f) == {"valid", "h"}, set(p.f)
        return p

    # ------------------------------------------------------------------ the core

    def elaborate(self, platform):
        m = Module()
        city = "city" in self.hashes
        seed, seeded = _registered_params(m, self, self.hashes)
        if len(self.hashes) == 2:
            farm = Signal(name="farm_r", reset_less=True)
            m.d.sync += farm.eq(self.hash == HASH_FARM)
        else:
            farm = Const(int(not city), 1)
        b, valid = self.i.payload, self.i.valid

        cyc = Signal(20, name="cyc")
        m.d.sync += cyc.eq(cyc + 1)
        t_first_r = Signal(20, name="t_first", reset_less=True)
        t_first = Mux(b.first, cyc, t_first_r)
        with m.If(valid & b.first):
            m.d.sync += t_first_r.eq(cyc)
        with m.If(valid & b.last & ((cyc - t_first)[:20] >= self.span)):
            m.d.sync += self.overflow.eq(1)

        # The input's first register (INPUT_STAGE cycles)
        valid, b, rems = _register_beat(m, "in", valid, _Beat.pack(b))
        if city:
            dvalid, db, drems, init_state = self._ring(m, valid, b, rems, farm)
        else:
            dvalid, db, drems = valid, b, rems
            fx, fy, fz = _farm_start()
            x0 = Signal(64, name="init_x", reset_less=True)
            with m.If(valid & b.first):
                m.d.sync += x0.eq((b.data + fx)[:64])
            init_state = [x0, Const(fy, 64), Const(fz, 64)] + [Const(0, 64)] * 4

        # (3) the streaming core on the delayed stream
        # the index's copies: the round's fire, the window's heads, the chunk words
        (dcur, hcur, ccur), dchunk0, in0 = _word_index(m, "dw", dvalid, db.first, users=3)
        dwin = _Window(m, "dw", dvalid, db, hcur, dchunk0, drems)
        cw = [Signal(64, name=f"chunk{k}", reset_less=True) for k in range(7)]
        for k in range(7):
            with m.If(dvalid & (ccur == k)):
                m.d.sync += cw[k].eq(db.data)
        # A round per whole 64-byte chunk before the last byte ((len - 1) // 64 of them): at a
        # chunk's 8th word that is not the record's last (its length matches its words).
        fire = dvalid & (dcur == 7) & ~db.last
        st = [Signal(64, name=f"st_{k}", reset_less=True) for k in STATE]
        start = [Mux(in0[i], init_state[i], st[i]) for i in range(len(STATE))]
        k1: list[_MulPool] = []
        rp, new = self._round(m, fire, start, cw + [db.data], self.adder_levels, self.behavioural, k1)
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
            self.hashes,
            k1[0],
        )
        k1[0].close()
        assert fin.depth == self.fin_depth
        m.d.comb += [self.o.valid.eq(fin["valid"]), self.o.payload.eq(fin["h"])]
        return m

    def _ring(self, m: Module, valid, b, rems, farm) -> tuple[Value, _Beat, list[Signal], list[Value]]:
        """(1) the start state of each record and (2) the ring: the stream again,
        :attr:`delay` cycles later (the memory's read data registered, with its byte shifts),
        with the start state of the record whose first word leaves the ring (registered at
        that word)."""
        (cur,), chunk0, _ = _word_index(m, "iw", valid, b.first)
        win = _Window(m, "iw", valid, b, cur, chunk0, rems)
        depth = 1 << (self.delay - 1).bit_length()
        wp = Signal(range(depth), name="ring_wp")
        m.d.sync += wp.eq(wp + 1)
        slot_r = Signal(range(depth), name="slot_r", reset_less=True)
        slot = Mux(b.first, wp, slot_r)
        with m.If(valid & b.first):
            m.d.sync += slot_r.eq(wp)

        # (1) the start state, into the memory at the slot of the record's first word
        inf = self._info_pipe(
            m,
            valid & b.last & (b.length > 64),
            slot,
            b.length,
            farm,
            win.head(0),
            win.ends,
            self.adder_levels,
            self.behavioural,
            self.hashes,
        )
        assert inf.depth == self.info_depth
        info = Memory(shape=64 * len(STATE), depth=depth, init=[])
        m.submodules.info = info
        iw = info.write_port()
        m.d.comb += [
            iw.addr.eq(inf["slot"]),
            iw.data.eq(Cat(*[inf[k] for k in STATE])),
            iw.en.eq(inf["valid"]),
        ]

        # (2) the ring (as offload.hw.lanes.delay), read two cycles early: into a register of
        # the read data alone (one load per bit, placed beside the RAM), then the beat's
        # register (its fields drive hundreds of loads); the start state is read in the beat's
        # cycle. Loading the beat's copies straight from the RAM left 4.2 ns after the DP16KD's
        # 5.83 ns clock-to-output to reach copies spread over the core (10.68 ns, nextpnr seed
        # 1). It also stores (len - 1) % 8 (the input's register of it): the end words' shift
        # copies need no decrement behind the RAM (two LUTs, 10.57 ns at seed 2).
        ring = Memory(shape=_Beat.WIDTH + 3, depth=depth, init=[])
        m.submodules.ring = ring
        rw = ring.write_port()
        rr = ring.read_port(domain="sync")
        ir = info.read_port(domain="sync")
        m.d.comb += [
            rw.addr.eq(wp),
            rw.data.eq(Cat(_Beat.pack(b), rems[0])),
            rw.en.eq(1),
            rr.addr.eq((wp - (self.delay - 3))[: len(wp)]),
            rr.en.eq(1),
            ir.addr.eq((wp - (self.delay - 1))[: len(wp)]),
            ir.en.eq(1),
        ]
        rvalid, _ = delay(m, "ringv", valid, Const(0, 1), self.delay - 2)
        raw_v = Signal(name="ringr_valid")
        raw = Signal(len(rr.data), name="ringr_data", reset_less=True)
        m.d.sync += [raw_v.eq(rvalid), raw.eq(rr.data)]
        dvalid, db, drems = _register_beat(m, "ringo", raw_v, raw[: _Beat.WIDTH], rem=raw[_Beat.WIDTH :])
        init = [Signal(64, name=f"init_{k}", reset_less=True) for k in STATE]
        with m.If(dvalid & db.first):
            m.d.sync += [init[i].eq(ir.data.word_select(i, 64)) for i in range(len(STATE))]
        return dvalid, db, drems, init


class _Beat:
    """A :data:`~offload.hw.xxhash.HashBeat` as one 99-bit value (fields as slices)."""

    WIDTH = 99

    def __init__(self, v: Value):
        self.data, self.first, self.last, self.empty, self.length = v[:64], v[64], v[65], v[66], v[67:99]

    @staticmethod
    def pack(b) -> Value:
        return Cat(b.data, b.first, b.last, b.empty, b.length)


def _register_beat(
    m: Module, name: str, valid, beat: Value, rem: Value | None = None
) -> tuple[Signal, _Beat, list[Signal]]:
    """The beat one cycle later, registered (the stream's first register: its fields drive
    hundreds of loads, from a register instead of the core's input or a memory's read data),
    with ``(len - 1) % 8`` (the end words' byte shift) registered beside it, a copy per end
    word. ``beat``: the packed :class:`_Beat` value; ``rem``: its ``(len - 1) % 8`` when the
    caller has it (computed from the beat otherwise)."""
    v = Signal(name=f"{name}_valid")
    r = Signal(_Beat.WIDTH, name=f"{name}_beat", reset_less=True)
    m.d.sync += [v.eq(valid), r.eq(beat)]
    if rem is None:
        rem = (_Beat(Value.cast(beat)).length - 1)[:3]
    rems = keep_copies(m, f"{name}_rem", rem, 8)
    return v, _Beat(r), rems


def _word_index(
    m: Module, name: str, valid, first, users: int = 1
) -> tuple[list[Value], Value, list[Signal]]:
    """The current beat's word index within its record modulo 8, whether the beat is one of
    the record's first 8 words (three bits and a flag: no wide compare in front of the
    registers they enable), and copies of that flag's register for the chunk round's start
    state (at a round's 8th word the beat is not a first one: the flag is the register).
    The index comes as ``users`` copies, each from a register of its own (kept apart in
    synthesis): one index register enabling the window's heads, the chunk words and the round
    was a routed critical path (``dw_idx`` to ``dw_head3``, 8.62 of 10.09 ns routing, 99.1 MHz
    on ECP5 at nextpnr seed 2)."""
    keep = {"keep": 1} if users > 1 else {}
    idxs = [
        Signal(3, name=f"{name}_idx" + (f"_c{k}" if k else ""), reset_less=True, attrs=keep)
        for k in range(users)
    ]
    in0 = Signal(name=f"{name}_chunk0", reset_less=True)
    curs = [Mux(first, 0, idx) for idx in idxs]
    chunk0 = first | in0
    copies = [
        Signal(name=f"{name}_chunk0_c{k}", reset_less=True, attrs={"keep": 1}) for k in range(len(STATE))
    ]
    with m.If(valid):
        m.d.sync += [idx.eq(cur + 1) for idx, cur in zip(idxs, curs)]
        m.d.sync += [r.eq(chunk0 & (curs[0] != 7)) for r in [in0, *copies]]
    return curs, chunk0, copies


def bswap(v: Value) -> Value:
    return Cat(*[v.word_select(7 - i, 8) for i in range(8)])


def _short(p: Pipe, city: bool, farm: bool) -> None:
    """The paths of records of at most 64 bytes (golden ``_hash_len_0to16``,
    ``_hash_len_17to32``, ``_city_len_33to64`` with ``city``, ``_farm_len_33to64`` with
    ``farm``) from fields ``h0..h3`` (the first four words), ``e4..e7`` (the last four), ``n7``
    (the length), ``a16`` (``h0 + k2``) and ``h1k`` (``rotr(h1 + k2, 18)``); leaves
    ``hshort``. A record takes one path, so the products of a level share multipliers, each
    operand picked by length (and ``farm``), and the products only records of 33..64 bytes
    need share pipelines (such records are 5+ cycles apart): 11 multipliers for FarmHash and 12
    for CityHash (two of them times-9 adders) where a multiplier per product took 18 and 22. A
    stage has at most one carry chain in front of a product's first adder level (farm's g:
    two carry-save levels and one); FarmHash's products on a shared multiplier have none in
    front of the pick, which a carry-save level follows in the same stage (so g, whose
    operand is a sum of four, has a multiplier of its own behind a register, and farm's h =
    (z + Fetch64(len - 24)) * mul is two products; CityHash's (z + a) * mul still adds z + a
    there). A field is dropped at its last reader, or waits in a hold register if only
    33..64-byte records read it."""
    both = city and farm

    def lens():
        """The length and its path flags (registers), at the current stage."""
        return p["n7"], p["le3"], p["le16"], p["le32"]

    def pick(farm_value, city_value):
        """The FarmHash or the CityHash value (callables: a one-hash core builds only its own)."""
        if both:
            return Mux(p["farm"], farm_value(), city_value())
        return farm_value() if farm else city_value()

    def on33(hash_: str) -> Value:
        """Whether a record of 33..64 bytes takes ``hash_``'s path."""
        if both:
            return p["farm"] if hash_ == "farm" else ~p["farm"]
        return Const(int((hash_ == "farm") == farm), 1)

    def mm(name, x, var=None, extra=()):
        # a carry-save level first (the operands are picks by length): no stage more at
        # 28..31 terms
        start_mul(p, name, x, CITY_K2, p["n7"] if var is None else var, extra=extra, csa_first=True)

    # The first level's operands, registered. Product c, by length: 1..3 bytes y = s[0] +
    # (s[len >> 1] << 8) (* k2); 4..16 rotr(b, 37) * mul + a; 17..32 and farm 33..64
    # Fetch64(len - 8) * mul; city 33..64 a + g = Fetch64(0) * k2 + Fetch64(len - 8). Product d:
    # 4..16 (rotr(a, 25) + b) * mul; 17..32 and farm 33..64 Fetch64(len - 16) * k2; city 33..64
    # e + f = Fetch64(16) * k2 + Fetch64(24) * 9. (A k2 product: mul's variable part gated off.)
    n, le3, le16, le32 = lens()
    h0, h1, h3, e5, e7, a16 = p["h0"], p["h1"], p["h3"], p["e5"], p["e7"], p["a16"]
    y3 = (h0[:8] + Cat(Const(0, 8), Mux(n[1], h0[8:16], h0[:8])))[:16]
    upd = {
        "xc": Mux(le3, y3, Mux(le16, e7.rotate_right(37), Mux(le32, e7, pick(lambda: e7, lambda: h0)))),
        "ec": Mux(le3 | ~le16 & (le32 | on33("farm")), 0, Mux(le16, a16, e7)),
        "vc": Mux(le3 | ~le32 & on33("city"), 0, n),
        "xd": Mux(
            le16, (a16.rotate_right(25) + e7)[:64], Mux(le32, p["e6"], pick(lambda: p["e6"], lambda: p["h2"]))
        ),
        "vd": Mux(le16, n, 0),
        "z3x": (n[:2] + Cat(Const(0, 2), e7[56:64]))[:10],  # 1..3: z = len + (s[len - 1] << 2)
        # v of 17..32 and farm 33..64: a + rotr(b + k2, 18) + c, with a + b from one product
        "h1kh": (p["h1k"] - h1)[:64],
        # City 33..64's h = Fetch64(len - 16) * mul, farm 33..64's e = Fetch64(16) * mul
        "xhf": pick(lambda: p["h2"], lambda: p["e6"]),
    }
    if city:
        e_f = ~le32 & on33("city")
        upd.update(ed0=Mux(e_f, Cat(Const(0, 3), h3)[:64], 0), ed1=Mux(e_f, h3, 0))
        upd["c9x"] = (h1.rotate_right(30) + e5)[:64]
    if farm:
        upd["h3h1"] = (h3 - h1)[:64]  # farm's f + a = h3 + (a + b) - b
    # the shared multipliers' gate (a 33..64-byte record), a field of its own (see _MulPool)
    upd["g33"] = p["valid"] & p["b33"]
    # The hold registers' enable: the same flag, a register of its own. As a LUT of valid and
    # b33 at each depth it drove the holds' clock enables across the core (10.13 ns, 9.37 of
    # it routing, nextpnr seed 2).
    upd["h33"] = upd["g33"]
    p.keep("h33")
    p.stage(drop=["a16", "e6", "h2", "h1k"], **upd)
    # Fields only records of 33..64 bytes (5+ cycles apart) read wait in hold registers.
    hd = _Hold(p, 5, lambda: p["h33"])
    hd.hold("e4", "e5")

    f = p.f
    mm("c", f.pop("xc"), f.pop("vc"), extra=[f.pop("ec")])
    mm("d", f.pop("xd"), f.pop("vd"), extra=[f.pop(k) for k in ("ed0", "ed1") if k in f])
    # a * k1 + b of 17..32: rotr(a + b, 43) reads them
    start_mul(p, "ab", f["h0"], CITY_K1, extra=[f["h1"]])
    start_mul(p, "z3", f.pop("z3x"), CITY_K0)
    if city:
        start_mul(p, "cf", f["h3"], 9)
        start_mul(p, "c9", f.pop("c9x"), 9)
    # The products only records of 33..64 bytes need in these levels share a multiplier (such
    # records are 5+ cycles apart; no register in front, a carry-save level behind the pick:
    # its 4 stages fit): farm's a * k2 + b (cab), e or city's h (hf) and farm's Fetch64(len -
    # 24) * mul (e5m, a part of its h).
    pool = _MulPool(p, "s0", CITY_K2, var_width=7, extras=1, gap=5, register=False, gate="g33")

    def issue(name, x, v, extra=()):
        return pool.issue(name, x, v, extra=extra)

    if farm:
        issue("cab", f["h0"], Const(0, 7), [f["h1"]])
    else:
        t_hf = issue("hf", f.pop("xhf"), p["n7"])
    p.stage(drop=([] if city else ["h1"]) + ([] if farm else ["h3"]), h0l=f.pop("h0")[:32])
    if farm:
        t_hf = issue("hf", p.f.pop("xhf"), p["n7"])
        # farm's h = (z + Fetch64(len - 24)) * mul as z * mul + this: z comes out of a
        # product, no carry chain then in front of h's pick
        p.stage()
        issue("e5m", hd["e5"], p["n7"])
    p.drain()

    # Mixing: HashLen16's (u, v) of 0..16, 17..32 and farm 33..64; city 33..64's u, v, x, z.
    f = p.f
    n, le3, le16, le32 = lens()
    e7 = p["e7"]
    c, d, ab = f.pop("c"), f.pop("d"), f.pop("ab")
    ge8 = n[3:] != 0
    hu = Mux(
        le16,
        Mux(ge8, c, (Cat(Const(0, 3), f.pop("h0l")) + n)[:64]),
        add3(ab.rotate_right(43), c.rotate_right(30), d),
    )
    hv = Mux(le16, Mux(ge8, d, e7[32:64]), add3(ab, f["h1kh"], c))
    upd = {"r3x": shift_mix(c ^ f.pop("z3"))}
    if farm:
        cab = f.pop("cab")
        hu = Mux(le32, hu, add3(cab.rotate_right(43), c.rotate_right(30), d))  # y
        hv = Mux(le32, hv, add3(cab, f["h1kh"], c))
        upd["h3ca"] = (cab + f.pop("h3h1"))[:64]
    # farm's g = (y + Fetch64(len - 32)) * mul, city's (x + z) * mul with x + z = rotr(e + f,
    # 42) + (e + f) + 2 * Fetch64(len - 24): a multiplier of its own (in the pool the operand's
    # carry chain, the pick and the carry-save level made one stage), the operand's carry-save
    # levels registered here, its carry chain in the next stage (both in one stage were the
    # core's critical path: 3.5 ns of route from the carry-save logic to the chain)
    upd["q2cs"] = pick(
        lambda: Cat(*carry_save(cab.rotate_right(43), c.rotate_right(30), d, hd["e4"])),
        lambda: Cat(*carry_save(d.rotate_right(42), d, Cat(Const(0, 1), hd["e5"]))),
    )
    pool.close()
    if city:
        cf, c9 = f.pop("cf"), f.pop("c9")
        # u + v = rotr(c, 43) + c9 + (c ^ e4) + cf + 1 with one carry chain (the 1 in the
        # carry-save level's free low bit): q1's operand is then a pick of registers
        x3 = [c.rotate_right(43), c9, c ^ hd["e4"]]
        maj = (x3[0] & x3[1]) | (x3[0] & x3[2]) | (x3[1] & x3[2])
        upd.update(
            cuv=add3(x3[0] ^ x3[1] ^ x3[2], Cat(Const(1, 1), maj[:63]), cf),
            cv=add3(c ^ hd["e4"], cf, 1),
            cx=(d.rotate_right(42) + hd["e5"])[:64],
            cz=(d + hd["e5"])[:64],
        )
    f.pop("h1kh")
    hd.drop("e5")
    if not city:
        hd.drop("e4")
    p.stage(drop=[] if city else ["e7"], hu=hu, hv=hv, **upd)
    # a pipeline of its own (its sum registered first), so no drain of this one waits for it
    q2m = _MulPool(p, "q2m", CITY_K2, var_width=7, gap=5)
    q2cs = p.f.pop("q2cs")
    q2m.issue("q2", (q2cs[:64] + q2cs[64:])[:64], p["n7"])
    q2m.close()
    _until(p, t_hf)

    # HashLen16's first product; city 33..64's w's; 1..3 bytes' result.
    f = p.f
    n, le3, le16, le32 = lens()
    q1 = f.pop("hu") ^ f["hv"]
    if city:
        q1 = Mux(~le32 & on33("city"), f.pop("cuv"), q1)
    mm("q1", Mux(le3, f.pop("r3x"), q1), Mux(le3, 0, n))
    if farm:
        f["feh3"] = (f["hf"] + f.pop("h3"))[:64]  # rotr(e + f, 43) of farm 33..64
    if city:
        # city 33..64's operand cz + ab4 + h1 of the shared multiplier below as (cz + h1) + ab4,
        # cz + h1 added here: one carry chain of registers in front of the pick, no carry-save
        # level (with it, that path missed 100 MHz at one placement seed)
        f["czh"] = (f.pop("cz") + f.pop("h1"))[:64]
    hd.hold(*[k for k in ("hf", "feh3", "h3ca", "cx", "czh", "cv", "e7") if k in p.f])
    level(p)
    if farm:
        hd.hold("e5m")
    # HashLen16's second; city: (v + w) * mul, w = bswap(u + v) * mul + h
    f = p.f
    n, le3, le16, le32 = lens()
    q3 = f.pop("hv") ^ shift_mix(f["q1"])
    if city:
        q3 = Mux(~le32 & on33("city"), add3(hd.get("cv", pop=True), bswap(f["q1"]), hd["hf"]), q3)
    f["r3"] = f.pop("q1")  # the result of 1..3 bytes
    if city:  # the add and the pick registered: one carry chain a stage
        p.stage(q3x=q3)
        q3 = p.f.pop("q3x")
    mm("q3", q3)
    level(p)
    # HashLen16's result (z of farm 33..64); city 33..64's y = (bswap(that) + g) * mul
    f = p.f
    n, le3, le16, le32 = lens()
    q4 = shift_mix(f["q3"])
    if city:
        q4 = Mux(~le32 & on33("city"), (bswap(f["q3"]) + hd.get("e7", pop=True))[:64], q4)
    f.pop("q3")
    if city:
        p.stage(q4x=q4)
        q4 = p.f.pop("q4x")
    mm("q4", q4)
    level(p)
    # Up to 32 bytes done: one field from here on.
    n, le3, le16, le32 = lens()
    hs = Mux(p["n0"], CITY_K2, Mux(le3, p.f.pop("r3"), p["q4"]))
    if city:
        # city 33..64's a = bswap((x + z) * mul + y) + b, a stage ahead of z + a
        p.stage(hs=hs, ab4=bswap((p["q2"] + p["q4"])[:64]))
        hs = p.f.pop("hs")
    # From here on only records of 33..64 bytes need products: two of them 4 cycles apart
    # share a multiplier, as above. 4 products for FarmHash on 2 multipliers, 2 for CityHash
    # on 1.
    pool33 = _MulPool(
        p, "s33", CITY_K2, var_width=7, extras=3 if farm else 2, gap=5, register=False, gate="g33"
    )

    def issue33(name, x, extra=()):
        return pool33.issue(name, x[:64], p["n7"], extra=extra)

    # City: (z + a) * mul + d + h; farm: h = z * mul + Fetch64(len - 24) * mul (e5m)
    f = p.f
    cbh = pick(lambda: p["q4"], lambda: (hd.get("czh", True) + p.f.pop("ab4"))[:64])
    # farm: u = rotr(e + f, 43) + rotr(g, 30) + h, its addends in h's adder tree (no carry
    # chain of its own in front of the next pick); v = e + rotr(f + a, 18) + g registered here
    upd, extra = {}, []
    if farm:
        q2 = p["q2"]
        extra = [hd.get("e5m", True), hd.get("feh3", True).rotate_right(43), q2.rotate_right(30)]
        upd["fv"] = add3(hd["hf"], hd.get("h3ca", True).rotate_right(18), q2)
    if city:
        ce = [hd.get("e4", True), hd["hf"]]
        extra = [Mux(p["farm"], fe, e) for fe, e in zip(extra, ce + [0])] if both else ce
    t = issue33("cbh", cbh, extra)
    f.pop("q4")
    hd.drop("hf")
    p.stage(drop=["q2"], hs=hs, **upd)
    _until(p, t)
    # City: shift_mix(that) * mul; farm: HashLen16(u, v, mul)'s first product
    f = p.f
    cbh = f.pop("cbh")
    t = issue33("q5", pick(lambda: cbh ^ p["fv"], lambda: shift_mix(cbh)))
    p.stage()
    _until(p, t)
    if farm:
        t = issue33("q6", p.f.pop("fv") ^ shift_mix(p["q5"]))
    c33r = {"c33": (p["q5"] + hd.get("cx", True))[:64]} if city else {}
    p.stage(drop=["q5"], **c33r)
    if farm:
        _until(p, t)
        t = issue33("ff", shift_mix(p.f.pop("q6")))
        p.stage()
        _until(p, t)
    pool33.close()
    big = pick(lambda: p.f.pop("ff"), lambda: p.f.pop("c33"))
    p.f["hshort"] = Mux(p["le32"], p.f.pop("hs"), big)
    p.f.pop("g33")
    p.f.pop("h33")


def _farm_long(m, valid, n, ends, st, round_depth, levels, behavioural) -> Pipe:
    """farmhashna's finish of records over 64 bytes (the end of golden ``_farm_long``: a last
    round over the record's last 64 bytes, the ends ``e0..e7``, under ``mul = k1 + 2 * (z &
    0xff)``, then three HashLen16) from the chunk loop's state ``st``; leaves field ``h``.
    Its records are 9+ cycles apart: 13 products on 4 shared multipliers, fields in
    :class:`_Hold` registers."""
    p = Pipe(m, "fl", levels=levels, behavioural=behavioural, valid=valid, c=(Value.cast(n) - 1)[:6])
    p.f.update({f"e{k}": ends[k] for k in range(8)})
    p.stage()  # the words out of the ring and the byte shift
    _gate_field(p, valid)
    hd = _Hold(p)
    hd.hold(*[f"e{k}" for k in range(8)])
    _until(p, round_depth - 1)
    sx, sy, sz, v0, sv1, w0, sw1 = st
    K = _MulPool(p, "flm", CITY_K1, var_width=8, gate="gate")
    # farmhashna: w0 += (len - 1) & 63; v0 += w0; w0 += v0, each as one addition
    c = p.f.pop("c")
    fm = sz[:8]  # mul = k1 + ((z & 0xff) << 1)
    t_y = K.issue("FY", add3(sy, sv1, hd["e6"]).rotate_right(42), fm)
    p.f.update(
        fm=fm,
        sz=sz,
        sv1=sv1,
        fv0=add3(v0, w0, c),
        fw0b=add3(Cat(Const(0, 1), w0), Cat(Const(0, 1), c), v0),
        txy=add3(sx, sy, hd["e1"]),
        w19=(sw1 + Cat(Const(0, 3), sw1))[:64],  # w1 * 9
        sw1=sw1,
    )
    p.stage()
    fv0 = p.f.pop("fv0")
    K.issue("FX", (p.f.pop("txy") + fv0)[:64].rotate_right(37), p["fm"])
    p.f["fv9e5"] = add3(Cat(Const(0, 3), fv0), fv0, hd["e5"])  # v0 * 9 + Fetch64(n - 24)
    hd.hold("fm", "sv1", "sw1", "w19", "fw0b")
    p.stage()
    K.issue("FZ", (p.f.pop("sz") + hd["fw0b"])[:64].rotate_right(33), hd["fm"])
    p.stage()
    t_v = K.issue("FV1", hd["sv1"], hd["fm"])
    _until(p, t_y)
    fyy = (p.f.pop("FY") + p.f.pop("fv9e5"))[:64]
    # shift_mix(y) registered beside y: no LUT level in front of its product's first adders
    p.stage(fyy=fyy, fys=shift_mix(fyy))
    start_mul(p, "fsm", p.f.pop("fys"), CITY_K0)
    p.f["fxx"] = p.f.pop("FX") ^ hd["w19"]
    p.stage()
    hd.hold("fxx")
    p.f["fzw"] = (p["FZ"] + hd["sw1"])[:64]
    hd.hold("FZ")
    _until(p, t_v)
    nv, nw = Weak(p, "nv"), Weak(p, "nw")
    e = [hd[f"e{k}"] for k in range(8)]
    nv.step(0, e[0:4], p.f.pop("FV1"), (hd["fxx"], hd["fw0b"]))
    nw.step(0, e[4:8], p.f.pop("fzw"), (p.f.pop("fyy"), e[2]))
    hd.drop(*[f"e{k}" for k in range(8)], "sv1", "sw1", "w19", "fw0b")
    for k in (1, 2):
        level(p)
        nv.step(k)
        nw.step(k)
    level(p)
    hd.hold("fsm")
    # fa = HashLen16(v0, w0, mul), fb = HashLen16(v1, w1, mul), then fo from both
    K.issue("fa_a", p.f.pop("nv0") ^ p["nw0"], hd["fm"])
    p.f["x1"] = p.f.pop("nv1") ^ p["nw1"]
    hd.hold("nw0", "nw1")
    p.stage()
    t = K.issue("fb_a", p.f.pop("x1"), hd["fm"])
    _until(p, t - 1)
    K.issue("fa_b", hd["nw0"] ^ shift_mix(p.f.pop("fa_a")), hd["fm"])
    p.stage()
    t = K.issue("fb_b", hd["nw1"] ^ shift_mix(p.f.pop("fb_a")), hd["fm"])
    hd.drop("nw0", "nw1")
    _until(p, t - 1)
    K.issue("fa", shift_mix(p.f.pop("fa_b")), hd["fm"])
    p.stage()
    t = K.issue("fb", shift_mix(p.f.pop("fb_b")), hd["fm"])
    _until(p, t)
    u = add3(p.f.pop("fa"), hd["fsm"], hd["fxx"])
    v = (p.f.pop("fb") + hd["FZ"])[:64]
    t = K.issue("fo_a", u ^ v, hd["fm"])
    p.f["fv"] = v
    hd.drop("fsm", "fxx", "FZ")
    p.stage()
    hd.hold("fv")
    _until(p, t)
    t = K.issue("fo_b", hd["fv"] ^ shift_mix(p.f.pop("fo_a")), hd["fm"])
    _until(p, t)
    hd.drop("fv")
    t = K.issue("h", shift_mix(p.f.pop("fo_b")), hd["fm"])
    _until(p, t)
    hd.drop("fm")
    K.close()
    p.f.pop("gate")
    assert not p.busy() and set(p.f) == {"valid", "h"}, set(p.f)
    return p


def _city_long(m, valid, st, round_depth, levels, behavioural, k1=None) -> Pipe:
    """CityHash's finish of records over 64 bytes (the end of golden ``_city_long``: three
    HashLen16 of the chunk loop's state ``st``); leaves field ``h``. Its records are 9+ cycles
    apart: the 9 products of the HashLen16 share 3 multipliers, fields wait in :class:`_Hold`
    registers. ``k1``: the chunk round's first multiplier (a :class:`_MulPool`), which
    computes ``shift_mix(y) * k1`` too."""
    p = Pipe(m, "cl", levels=levels, behavioural=behavioural, valid=valid)
    p.stage()
    _gate_field(p, valid)
    _until(p, round_depth - 1)
    sx, sy, sz, sv0, sv1, sw0, sw1 = st
    K = _MulPool(p, "clm", CITY_KMUL, gate="gate")
    K.issue("lv_a", sv0 ^ sw0)
    if k1 is None:
        start_mul(p, "lsm", shift_mix(sy), CITY_K1)
    else:
        # A record's last round fires at least a cycle before its last word and takes the
        # multiplier in that cycle and the next; the next record's first round fires 8 or more
        # cycles after that word: 1..7 cycles after it, this product never meets a round.
        assert 1 <= p.depth <= CityFarmCore.ROUND - 1
        k1.issue_from(p, "lsm", shift_mix(sy))
    p.f.update(x1=sv1 ^ sw1, sw0=sw0, sw1=sw1, sx=sx, sz=sz)
    p.stage()
    hd = _Hold(p)
    t = K.issue("lw_a", p.f.pop("x1"))
    hd.hold("sw0", "sw1", "sx", "sz")
    _until(p, t - 1)
    K.issue("lv_b", hd["sw0"] ^ shift_mix(p.f.pop("lv_a")))
    p.stage()
    t = K.issue("lw_b", hd["sw1"] ^ shift_mix(p.f.pop("lw_a")))
    hd.drop("sw0", "sw1")
    hd.hold("lsm")
    _until(p, t - 1)
    K.issue("lv", shift_mix(p.f.pop("lv_b")))
    p.stage()
    t = K.issue("lw", shift_mix(p.f.pop("lw_b")))
    _until(p, t)
    u = add3(p.f.pop("lv"), hd["lsm"], hd["sz"])
    v = (p.f.pop("lw") + hd["sx"])[:64]
    t = K.issue("lo_a", u ^ v)
    p.f["lv1"] = v
    hd.drop("lsm", "sz", "sx")
    p.stage()
    hd.hold("lv1")
    _until(p, t)
    t = K.issue("lo_b", hd["lv1"] ^ shift_mix(p.f.pop("lo_a")))
    _until(p, t)
    hd.drop("lv1")
    t = K.issue("h", shift_mix(p.f.pop("lo_b")))
    _until(p, t)
    K.close()
    p.f.pop("gate")
    assert not p.busy() and set(p.f) == {"valid", "h"}, set(p.f)
    return p
