"""Post-processing cores on a stream of XXH64 values: ``hash_bucket`` (mod / fastrange) and ``fid``.

``h % num_buckets`` has two cores: :class:`ModPipe` (a restoring subtract pipeline, no DSP: the
engine's default) and :class:`ModReciprocal` (a reciprocal computed in hardware when
``num_buckets`` changes, then two multiplies on DSP blocks per value: a third of the logic,
but in the engine its DSP paths placed far slower, see its docstring).

All are flow-through pipelines (input always ready, output must always be taken), one value per
cycle, bit-exact with :func:`offload.golden.hash_bucket` and :func:`offload.golden.fid`.
Parameters (``num_buckets``, ``slot``) are ports held stable during a batch.

Timing rule used throughout (ECP5 target >= 110 MHz, i.e. ~9 ns per stage): a register stage
holds at most one carry chain of ~64 bits (parallel chains are fine) plus a few LUT levels.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from offload.golden import FID_LAYOUT

from .common import MULTIPLIERS, Pipe, check_choice, mux_index

M64 = (1 << 64) - 1

__all__ = ["ModPipe", "ModReciprocal", "FastRange", "FidCore", "reciprocal"]


class _BucketCore(wiring.Component):
    """A core of ``hash_bucket``'s second step: ports ``i`` In(stream of 64-bit values, always
    ready), ``o`` Out(stream of 64-bit results, always ready), ``num_buckets`` In(64); the
    ``multipliers`` flavour validated (see :data:`~offload.hw.common.MULTIPLIERS`)."""

    def __init__(self, multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        self.behavioural = check_choice("multipliers", multipliers, MULTIPLIERS) == "behavioural"
        self._MustUse__silence = False
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "o": Out(stream.Signature(64, always_ready=True)),
                "num_buckets": In(64),
            }
        )


class ModPipe(_BucketCore):
    """``h % num_buckets`` for ANY 64-bit ``num_buckets >= 1``, exact, one value per cycle.

    A restoring division pipeline that keeps only the remainder, so there is no divider that
    stalls per record and no reciprocal to precompute. Each register stage shifts the next
    ``rb`` bits of ``h`` into the partial remainder, ``R = r << rb | bits`` (``R < 2**rb * n``
    because ``r < n``), and subtracts the largest multiple ``q * n <= R``: the ``2**rb - 1``
    candidates ``R - k * n`` are computed in parallel, each by ONE ``64 + rb + 1``-bit subtract
    whose borrow is the compare (no separate comparator), and a mux steered by the borrows
    picks the result (they are a thermometer code in ``k``, so borrow ``k`` alone decides
    "``q >= k``"). So a register stage holds one carry chain and ``rb`` mux levels.

    ``bits_per_stage`` (``rb``) is 1 or 2, the co-design knob between latency and Fmax: radix 2
    (one 66-bit chain + 2:1 mux per stage, latency 65) has the shorter stage; radix 4 (three
    parallel 67-bit chains + 4:1 mux, latency 33) halves the latency at a lower Fmax (the
    borrows fan out to the mux). A single-cycle radix-16 step (15 parallel 68-bit subtracts per
    stage) does not route on the ECP5-85, so 4 bits per stage is not offered. The measured
    figures are in docs/verification.md.
    The multiples ``n`` (and ``3n`` for radix 4) are registered once from the ``num_buckets``
    port (``2n`` is wiring), so ``num_buckets`` must be stable 1 cycle before the first value
    (it is held during a batch).

    Latency :attr:`latency` = ``64 // rb + 1`` cycles (65 or 33), throughput one value per cycle, no
    stall. ``num_buckets == 0`` gives ``h`` (the engine rejects it with BAD_PARAM before a
    batch starts). Reset: only the ``valid`` bits matter.

    Ports: ``i`` In(stream of 64-bit values, always ready), ``o`` Out(stream of 64-bit
    remainders, always ready), ``num_buckets`` In(64).

    ``multipliers="behavioural"`` (simulation flavour, see
    :data:`~offload.hw.common.MULTIPLIERS`): the
    remainder is one ``%`` where the first stage reads ``h`` and travels through the same
    number of registers, so the ports see the same values in the same cycles (``num_buckets``
    is held while values are in flight). A Verilator model then evaluates one native ``%`` per
    value instead of 64 wide subtracts per cycle, and nothing at all while the core's enable
    is low (the subtracts' shared terms were computed every cycle, outside the enable).
    """

    def __init__(self, bits_per_stage: int = 1, multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        self.bits_per_stage = check_choice("bits_per_stage", bits_per_stage, (1, 2))
        self.radix_bits = bits_per_stage  # quotient bits per register stage
        self.latency = 64 // self.radix_bits + 1
        super().__init__(multipliers)

    def elaborate(self, platform):
        m = Module()
        b = self.radix_bits
        w = 64 + b  # width of R and of the multiples k * n < 2**b * 2**64
        n = Signal(64, reset_less=True)
        m.d.sync += n.eq(self.num_buckets)  # registered: fan-out to every stage
        mult = [None, n]
        if b == 2:
            n3 = Signal(66, reset_less=True)
            m.d.sync += n3.eq(self.num_buckets + (self.num_buckets << 1))
            mult += [n << 1, n3]

        stages = 64 // b
        if self.behavioural:
            h = self.i.payload
            p = Pipe(m, "mod", valid=self.i.valid, r=Mux(n == 0, h, h % n))
            for _ in range(stages + 1):
                p.stage()
            m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["r"])]
            assert p.depth == self.latency
            return m
        p = Pipe(m, "mod", valid=self.i.valid, h=self.i.payload, r=Const(0, 64))
        for s in range(stages):
            r, h = p["r"], p["h"]
            hw = len(h)
            R = Cat(h[hw - b :], r)  # the next b bits of h, MSB first
            cand = [R[:64]]  # q = 0: R < n, so it fits 64 bits
            ge = [None]
            for k in range(1, 1 << b):
                d = R - mult[k]  # w + 1 bits; top bit = borrow
                ge.append(~d[w])  # R >= k * n
                cand.append(d[:64])  # < n when k == q: fits 64 bits
            # ge is a thermometer code (R >= k*n implies R >= j*n for j < k): the result is
            # the candidate of q = max{k : ge[k]}.
            if b == 1:
                r = Mux(ge[1], cand[1], cand[0])
            else:
                r = Mux(ge[2], Mux(ge[3], cand[3], cand[2]), Mux(ge[1], cand[1], cand[0]))
            if s < stages - 1:
                p.stage(r=r, h=h[: hw - b])  # consumed bits are not carried on
            else:
                p.stage(drop=["h"], r=r)
        p.stage()  # output register
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["r"])]
        assert p.depth == self.latency
        return m


def _csa(a: Value, b: Value, c: Value, width: int) -> tuple[Value, Value]:
    """3:2 carry-save adder: ``a + b + c == s + cy`` modulo ``2**width``; one LUT level."""
    s = (a ^ b ^ c)[:width]
    cy = Cat(Const(0, 1), (a & b) | (a & c) | (b & c))[:width]
    return s, cy


def _sum_limb_products(p: Pipe, limbs: list[tuple[int, int]], L: int, width: int) -> None:
    """Two stages of pipe ``p`` that sum its fields ``p{a}{b}`` (registered products of the
    ``L``-bit limbs ``a`` and ``b``, at bit ``L * (a + b)``) modulo ``2**width`` to two rows,
    fields ``x`` and ``y``, and drop them. Products whose diagonals ``a + b`` differ by 2 or
    more do not overlap, so they share a row; the 7 rows go through two 3:2 carry-save levels
    per stage (LUTs only): 7 -> 5 -> 4, then 4 -> 3 -> 2."""
    rows: list[dict[int, Value]] = []
    for a, b in limbs:
        d = a + b
        for row in rows:
            if all(abs(d - e) >= 2 for e in row):
                row[d] = p[f"p{a}{b}"]
                break
        else:
            rows.append({d: p[f"p{a}{b}"]})
    vals = []
    for row in rows:
        v = Const(0, width)
        for d, prod in row.items():
            v = v | (prod << (L * d))[:width]
        vals.append(v)
    assert len(vals) == 7
    s0, c0 = _csa(vals[0], vals[1], vals[2], width)
    s1, c1 = _csa(vals[3], vals[4], vals[5], width)
    s2, c2 = _csa(s0, c0, s1, width)
    p.stage(drop=[f"p{a}{b}" for (a, b) in limbs], a=s2, b=c2, c=c1, d=vals[6])
    s3, c3 = _csa(p["a"], p["b"], p["c"], width)
    s4, c4 = _csa(s3, c3, p["d"], width)
    p.stage(drop=["a", "b", "c", "d"], x=s4, y=c4)


class FastRange(_BucketCore):
    """``(h * num_buckets) >> 64`` (Lemire's fastrange): the high half of the 128-bit product.

    Both operands are split into four 16-bit limbs. Stages 1 and 2 copy them: every
    multiplier gets its own registers of its two limbs (``fr_opa{i}{j}`` then ``fr_ops{i}{j}``,
    marked ``keep`` so synthesis does not merge the 16 equal copies back into one), because one
    register bit fanning out to four DSP blocks spread along the device's DSP rows was the
    engine's routed critical path (register -> MULT18X18D -> product register, 10.35 ns, 5.90
    of it routing). The 16 limb products (16x16, one ECP5 MULT18X18D / 7-series DSP48E1 each)
    are registered (stage 3) and registered again (stage 4). The second register on each side
    lets the placer put one register beside the DSP block and the other beside the logic it
    serves: with one each, a DSP placed 37 rows from both was 11.44 ns (nextpnr seed 2). The
    products are packed into 7
    non-overlapping 128-bit rows (products whose diagonals ``i + j`` differ by >= 2 share a row)
    which two stages of 3:2 carry-save adders reduce to two rows, two CSA levels (LUTs only, no
    carry chain) per stage: 7 -> 5 -> 4 (stage 5), 4 -> 3 -> 2 (stage 6). Stage 7 adds the two
    rows with carry select: the carry out of the low 64 bits and both ``hi`` and ``hi + 1``
    are three parallel ~64-bit chains, then a mux. Every stage holds at most one carry chain.

    Latency 7 cycles (:attr:`latency`), one value per cycle, no stall. ``num_buckets`` is
    registered with the first value (into the copies), so it must be stable from the first
    value's cycle on. Reset: only the ``valid`` bits matter. The critical path (ECP5) is the
    unregistered MULT18X18D itself.

    Ports: ``i``, ``o`` as :class:`ModPipe`, ``num_buckets`` In(64).

    ``multipliers="behavioural"`` (simulation flavour): the high half as one ``*`` where
    stage 2 reads ``h``, delayed by the same 7 registers (same values in the same cycles, see
    :class:`ModPipe`).
    """

    latency = 7

    def elaborate(self, platform):
        m = Module()
        h = self.i.payload
        if self.behavioural:
            n = Signal(64, reset_less=True)
            m.d.sync += n.eq(self.num_buckets)
            p = Pipe(m, "fr", valid=self.i.valid, h=h)
            p.stage()
            p.stage(drop=["h"], hi=(p["h"] * n)[64:128])
            for _ in range(self.latency - 2):
                p.stage()
            m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["hi"])]
            assert p.depth == self.latency
            return m
        L, N = 16, 4
        p = Pipe(m, "fr", valid=self.i.valid)
        p.stage()
        p.stage()
        prods = {}
        for i in range(N):
            for j in range(N):
                # Stages 1 and 2: each multiplier's own copies of h's limb i and num_buckets'
                # limb j.
                keep = {"keep": 1}
                opa = Signal(2 * L, name=f"fr_opa{i}{j}", reset_less=True, attrs=keep)
                ops = Signal(2 * L, name=f"fr_ops{i}{j}", reset_less=True, attrs=keep)
                m.d.sync += [
                    opa.eq(Cat(h[L * i : L * (i + 1)], self.num_buckets[L * j : L * (j + 1)])),
                    ops.eq(opa),
                ]
                prods[f"p{i}{j}"] = ops[:L] * ops[L:]
        p.stage(**prods)
        p.stage()
        # Stages 5 and 6: the 16 products in 7 rows, summed to two.
        _sum_limb_products(p, [(i, j) for i in range(N) for j in range(N)], L, 128)
        # Stage 7: carry-select final add; only the high half is kept.
        x, y = p["x"], p["y"]
        carry = (x[:64] + y[:64])[64]
        hi0 = (x[64:] + y[64:])[:64]
        hi1 = (Cat(Const(1, 1), x[64:]) + Cat(Const(1, 1), y[64:]))[1:65]  # x + y + 1, one chain
        p.stage(drop=["x", "y"], hi=Mux(carry, hi1, hi0))
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["hi"])]
        assert p.depth == self.latency
        return m


def reciprocal(n: int) -> tuple[int, int]:
    """The reciprocal :class:`ModReciprocal` computes for a divisor ``1 <= n < 2**64``, as the
    hardware does it: ``(m, s)`` with ``s`` the leading zeros of ``n`` and
    ``m = floor((2**(127 - s) - 1) / n) < 2**64``. A model of the hardware's steps, so tests
    can check each one; ``h % n`` is then :func:`mod_by_reciprocal`."""
    if not 1 <= n < 1 << 64:
        raise ValueError(f"n must be between 1 and 2**64 - 1, not {n!r}")
    s = 64 - n.bit_length()  # normalise: nn = n << s has its top bit set
    nn = n << s
    # (2**(127 - s) - 1) / n == (2**127 - 2**s) / nn: a 127-bit dividend whose bits s..126 are
    # set, divided two quotient bits per step. Its top 63 bits (2**63 - 1) are below nn, so the
    # quotient has 64 bits: 32 steps.
    r, q = (1 << 63) - 1, 0
    for i in range(63, 0, -2):
        big = r << 2 | (i >= s) << 1 | (i - 1 >= s)
        k = min(3, big // nn)
        r, q = big - k * nn, q << 2 | k
    return q, s


def mod_by_reciprocal(h: int, n: int) -> int:
    """``h % n`` as :class:`ModReciprocal` computes it: ``q = ((h * m) >> 64) >> (63 - s)`` is
    ``h // n`` or one less, so ``h - q * n`` (never negative, at most ``h``: 64 bits) needs at
    most one subtraction of ``n``."""
    if n == 0:
        return h
    m, s = reciprocal(n)
    r = h - (((h * m) >> 64) >> (63 - s)) * n
    assert 0 <= r < 2 * n
    return r - n if r >= n else r


class ModReciprocal(_BucketCore):
    """``h % num_buckets`` for any 64-bit ``num_buckets >= 1``, exact, one value per cycle, by a
    reciprocal: Barrett reduction with the reciprocal computed by the core itself.

    When ``num_buckets`` changes (or after reset), a small sequential unit computes
    ``m = floor((2**(127 - s) - 1) / n)`` with ``s`` the leading zeros of ``n``
    (:func:`reciprocal`): a 4-stage normalisation pipeline (leading zeros per byte, their
    count, two shifts), then a radix-4 restoring division, 32 steps of three parallel 67-bit
    compare-subtracts: :attr:`setup` cycles in all. Per value, a
    pipeline with no loop computes ``q = ((h * m) >> 64) >> (63 - s)``, which is ``h // n`` or
    one less for every ``h < 2**64`` (the error of ``m`` times ``h`` is below 1), so
    ``r = h - q * n`` is in ``[0, 2n)`` and one conditional subtraction finishes it
    (:func:`mod_by_reciprocal`). The two multiplies run on DSP blocks: ``h * m``'s high half is
    a :class:`FastRange` (16 limb products), ``q * n``'s low half 10 limb products (16x16,
    limbs ``i + j <= 3``) summed by carry-save levels. :class:`ModPipe` resolves one quotient
    bit per stage instead: no DSP, but 64 subtract stages (~8k LUT4 on ECP5, 5x this core).

    ``num_buckets`` must be stable :attr:`setup` cycles before the first value and while values
    are in flight (the engine loads it at START, and its first value needs the hash pipeline's
    latency to arrive, which the engine checks at elaboration). ``num_buckets == 0`` gives ``h``
    (the engine rejects it with BAD_PARAM before a batch starts).

    Stages: the :class:`FastRange` (7), the variable shift (2: 8-bit then 1-bit steps), the
    limb products (1, registered), two carry-save stages (7 -> 4 -> 2 rows), ``q * n`` (one
    carry chain), ``h - q * n`` (one), the correction (one subtract and a mux): latency
    :attr:`latency` = 15, one value per cycle, no stall. Reset: the valid bits, and a
    ``stale`` flag that restarts the reciprocal (the data registers are reset-less).

    Ports: ``i`` In(stream of 64-bit values, always ready), ``o`` Out(stream of 64-bit
    remainders, always ready), ``num_buckets`` In(64).

    ``multipliers="behavioural"`` (simulation flavour, see
    :data:`~offload.hw.common.MULTIPLIERS`): one ``%`` where the first stage reads ``h``,
    carried through the same number of registers; the ports see the same values in the same
    cycles once ``num_buckets`` has been stable for :attr:`setup` cycles (no reciprocal unit).
    """

    latency = FastRange.latency + 8
    #: cycles from a change of ``num_buckets`` to the first value that uses it: its register,
    #: the registered compare with the divisor in use, the restart (the divisor's register), 4
    #: normalisation stages, the start of the division (``3n``) and 32 division steps. (The
    #: FastRange copies ``m`` into its multipliers' registers in the same cycle as ``h``.)
    setup = 1 + 1 + 1 + 4 + 1 + 32

    def elaborate(self, platform):
        m = Module()
        n_in = Signal(64, reset_less=True)  # the port, registered
        m.d.sync += n_in.eq(self.num_buckets)
        h = self.i.payload
        if self.behavioural:
            p = Pipe(m, "mr", valid=self.i.valid, r=Mux(n_in == 0, h, h % n_in))
            for _ in range(self.latency):
                p.stage()
            m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["r"])]
            return m

        # ---- the reciprocal unit (runs after num_buckets changes)
        # Normalisation is a feed-forward pipeline from the registered divisor n (no loop, no
        # enable): leading zeros per byte (A), their count s (B), n and the dividend's low bits
        # shifted by 8 * s[3:] (C) then s[:3] (D). As a 6-step loop shifting one register in
        # place, its compares drove that register's enable, the core's longest path (10.9 ns,
        # 9 of it routing). Then the radix-4 division, 32 steps; one compare-subtract stage
        # each, reading the dividend's bits from a shift register (not a compare with s).
        n = Signal(64, name="mr_n", reset_less=True)  # the divisor m is (being) computed for
        stale = Signal(init=1)  # restart after reset
        # n_in != n, registered: the 64-bit compare drives one flip-flop, not the enables and
        # resets of the unit (as a restart condition it was the longest path, 10.4 ns).
        differs = Signal(reset_less=True)
        restart = stale | differs
        m.d.sync += differs.eq((n_in != n) & ~restart)
        with m.If(restart):
            m.d.sync += [n.eq(n_in), stale.eq(0)]
        nbytes = [n[8 * j : 8 * j + 8] for j in range(8)]
        byte_nz = Signal(8, name="mr_byte_nz", reset_less=True)  # A
        byte_lz = [Signal(3, name=f"mr_byte_lz{j}", reset_less=True) for j in range(8)]
        for j, b in enumerate(nbytes):
            lz = Const(7, 3)  # a zero byte: never selected below
            for bit in range(8):  # the highest set bit wins
                lz = Mux(b[bit], 7 - bit, lz)
            m.d.sync += [byte_nz[j].eq(b.any()), byte_lz[j].eq(lz)]
        s = Signal(6, name="mr_s", reset_less=True)  # n's leading zeros         (B)
        top = Const(0, 3)  # the highest non-zero byte (0 if none)
        for j in range(8):
            top = Mux(byte_nz[j], j, top)
        m.d.sync += s.eq(Cat(mux_index(top, byte_lz), ~top))  # 8 * (7 - top) + lz
        nn1 = Signal(64, name="mr_nn1", reset_less=True)  # C
        dv1 = Signal(64, name="mr_dv1", reset_less=True)
        m.d.sync += [
            nn1.eq((n << Cat(Const(0, 3), s[3:]))[:64]),
            dv1.eq((Const(M64, 64) << Cat(Const(0, 3), s[3:]))[:64]),
        ]
        nn = Signal(64, name="mr_nn", reset_less=True)  # n << s: its top bit set     (D)
        dvn = Signal(64, name="mr_dvn", reset_less=True)  # the dividend's bits s..63 set
        m.d.sync += [nn.eq((nn1 << s[:3])[:64]), dvn.eq((dv1 << s[:3])[:64])]
        # Stage D holds the new divisor's values 5 cycles after the restart (n, A, B, C, D).
        wait = Signal(3, reset_less=True)
        pending = Signal()  # the division has not started yet
        with m.If(restart):
            m.d.sync += [wait.eq(4), pending.eq(1)]
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        start = Signal()
        m.d.comb += start.eq(pending & (wait == 0) & ~restart)
        n3 = Signal(66, name="mr_n3", reset_less=True)  # 3 * nn
        r = Signal(64, name="mr_rem", reset_less=True)  # the division's partial remainder
        q = Signal(64, name="mr_m", reset_less=True)  # the quotient: m when done
        dv = Signal(64, name="mr_dividend", reset_less=True)  # dividend bits, next two on top
        i = Signal(5, name="mr_i", reset_less=True)  # division steps left - 1
        running = Signal()
        with m.If(start):
            m.d.sync += [
                n3.eq(nn + (nn << 1)),
                r.eq((1 << 63) - 1),
                dv.eq(dvn),
                i.eq(31),
                running.eq(1),
                pending.eq(0),
            ]
        with m.Elif(running & ~restart):
            big = Cat(dv[62], dv[63], r)  # 4r + two dividend bits
            d = [big - nn, big - (nn << 1), big - n3]  # 67 bits; top = borrow
            ge = [~x[66] for x in d]  # thermometer in k
            m.d.sync += [
                r.eq(Mux(ge[1], Mux(ge[2], d[2][:64], d[1][:64]), Mux(ge[0], d[0][:64], big[:64]))),
                q.eq(Cat(ge[0] & ~ge[1] | ge[2], ge[1], q[:62])),
                dv.eq(dv << 2),
                i.eq(i - 1),
            ]
            with m.If(i == 0):
                m.d.sync += running.eq(0)
        with m.If(restart):
            m.d.sync += running.eq(0)

        # ---- per value: q = ((h * m) >> 64) >> (63 - s), r = h - q * n, one correction
        fr = FastRange()
        m.submodules.recip_mul = fr
        m.d.comb += [fr.num_buckets.eq(q), fr.i.valid.eq(self.i.valid), fr.i.payload.eq(h)]
        sh = ~s  # 63 - s
        zero = Signal(reset_less=True)
        m.d.sync += zero.eq(n == 0)
        p = Pipe(m, "mr", valid=self.i.valid, h=h)
        for _ in range(FastRange.latency):
            p.stage()
        hi = fr.o.payload
        p.stage(q8=hi >> Cat(Const(0, 3), sh[3:]))  # 0, 8, .., 56
        p.stage(drop=["q8"], q=p["q8"] >> sh[:3])  # 0..7
        L = 16
        prods = {
            (a, b): (p["q"][L * a : L * a + L] * n[L * b : L * b + L])
            for a in range(4)
            for b in range(4)
            if a + b <= 3
        }
        p.stage(drop=["q"], **{f"p{a}{b}": v for (a, b), v in prods.items()})
        # The 10 products of the truncated 64-bit sum in 7 rows, summed to two (2 stages).
        _sum_limb_products(p, list(prods), L, 64)
        p.stage(drop=["x", "y"], qn=(p["x"] + p["y"])[:64])
        p.stage(drop=["qn"], r=(p["h"] - p["qn"])[:64])  # in [0, 2n): fits 64 bits
        rr = p["r"]
        dn = rr - n  # 65 bits; top = borrow
        p.stage(drop=["r", "h"], res=Mux(zero, p["h"], Mux(dn[64], rr, dn[:64])))
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["res"])]
        assert p.depth == self.latency
        return m


class FidCore(wiring.Component):
    """Monolith feature id: ``slot << sig_bits | h & (2**sig_bits - 1)`` with the layout of
    ``golden.FID_LAYOUT[version]``; ``version`` (1 or 2) is a port so one core serves OP 5 and 6.
    Latency 1 cycle. The slot is masked to the layout's width (range checks are the engine's).

    Ports: ``i``/``o`` as :class:`ModPipe`, ``slot`` In(16), ``version`` In(2).
    """

    latency = 1

    def __init__(self):
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "o": Out(stream.Signature(64, always_ready=True)),
                "slot": In(16),
                "version": In(2),
            }
        )

    def elaborate(self, platform):
        m = Module()
        h = self.i.payload
        outs = {}
        for ver, (slot_bits, sig_bits) in FID_LAYOUT.items():
            outs[ver] = Cat(h[:sig_bits], self.slot[:slot_bits], Const(0, 64 - sig_bits - slot_bits))
        vers = sorted(outs)
        res = outs[vers[-1]]
        for ver in vers[:-1]:
            res = Mux(self.version == ver, outs[ver], res)
        p = Pipe(m, "fid", valid=self.i.valid, f=res)
        p.stage()
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["f"])]
        return m
