"""XXH64 and XXH32 cores, bit-exact with :func:`offload.golden.xxh64` / :func:`offload.golden.xxh32`.

Two kinds of core per algorithm:

* ``XXH64Core`` / ``XXH32Core``: records of any length streamed as 64-bit words (the framing of
  ``docs/wire_format.md`` after the engine has removed the header words), one word per cycle.
  A fixed 4- or 8-byte key is simply a one-word record, so these cores also hash one fixed key
  per cycle; the engine uses them for every format.
* ``XXH64Fixed`` / ``XXH32Fixed``: a short pipeline for one fixed-width key per cycle (the
  finalisation of a 4/8-byte input unrolled into stages), for builds that only need fixed keys.

Structure of the record cores (why it sustains one word per cycle):

1. *Stripe loop.* Words inside the 32-byte (XXH32: 16-byte) stripes update the lane
   accumulators ``v1..v4``. Word ``i`` of a record feeds lane ``i % 4`` (XXH32: the two 32-bit
   lanes ``2*(i%2)``, ``2*(i%2)+1``), so a lane is updated at most every 4 (2) cycles; the round
   ``acc = rotl(acc + lane*P2, 31) * P1`` is split so that ``lane*P2`` is computed ahead (it does
   not depend on ``acc``) and only ``rotl(acc + .)*P1`` sits in the loop, as one adder followed
   by carry-save levels and a final adder spread over exactly 4 (2) register stages.
2. *Tail buffer.* Words after the last full stripe (at most 4; XXH32: 2) are kept.
3. *Finaliser.* On a record's last word, ``v1..v4``, the tail words and the length enter a fully
   unrolled pipeline (merge rounds, up to 3 word steps, the 4-byte step, up to 3 byte steps,
   avalanche), each step a pipelined constant multiply that is bypassed when the record is too
   short for it. Records are independent, so one record can enter per cycle. The rounds only
   long records need share multipliers (``round(0, v)`` of ``v1..v4``: one pipeline fed in 4
   consecutive cycles, as two records with stripes are at least 4 words apart; tail words 2 and
   3 likewise): 8 of the core's ~30 64-bit multiplies (see ``xxh64_finalize``).

Multipliers: no DSP blocks. Every multiply is by a constant prime, built in LUTs from the
prime's signed digits as an adder tree (``offload.hw.common``); ``adder_levels`` sets how much
of the tree sits between two registers (``offload.hw.common.ADDER_LEVELS``): 1 gives one carry
chain per stage (most registers and stages), 2 two chained carry chains (about half the stages
and registers, the slowest stage), ``"csa"`` a carry-save LUT level in front of one carry chain
(three terms per stage: the stages of 2 for a 64-bit product, nearly the stage delay of 1;
the default: with 1, ``XXH64Core`` has twice the flip-flops and did not route on the ECP5-85;
docs/verification.md has the figures). The DSP version (three
32x32 partial products per 64-bit product) needed ~309 DSP blocks for ``XXH64Core``, more than
an xc7z020 or an ECP5-85 has. ``multipliers="behavioural"`` (every core) builds the simulation
flavour instead: each product is one ``*`` carried through registers of the adder tree's depth
(``Pipe.mul_tree``, and a branch of the stripe loop), cycle-identical at the ports, only so that
a Verilator model runs fast; ``"lut"`` (the default) is what is synthesised.

Ports (all cores): ``i`` (stream in, never stalls: ``ready`` is always 1), ``o`` (stream out,
must always be accepted: ``valid`` for one cycle per record), ``seed`` (held stable during a
batch; derived init values are registered, so allow 2 cycles after a change before the first
word). Reset: the synchronous ``rst`` clears only the ``valid`` bits; data registers (the
accumulators, tail buffers, the word counter, which a record's first word restarts) need none,
so a reset is a net to a few dozen flip-flops, not thousands. Latency: ``self.latency`` cycles
from a record's last word on ``i`` to its result on ``o``. Throughput: one input word per cycle,
any mix of records.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from offload.golden import MASK32, MASK64, XXH32_PRIMES, XXH64_PRIMES

from .common import (
    Pipe,
    check_choice,
    const_mul_terms,
    csa_level,
    mul_depth,
    mux_index,
    set_multiplier_params,
    term_value,
    xorshift,
)

__all__ = [
    "HashBeat",
    "XXH64Core",
    "XXH32Core",
    "XXH64Fixed",
    "XXH32Fixed",
    "xxh64_finalize",
    "xxh32_finalize",
    "xxh64_avalanche",
    "xxh32_avalanche",
]

#: One input word of a record: ``first`` on the record's first beat, ``last`` on its last,
#: ``empty`` for a beat that carries no data (a 0-byte record is one beat with first, last and
#: empty set), ``length`` = the record's byte length (held on every beat of the record).
HashBeat = data.StructLayout({"data": 64, "first": 1, "last": 1, "empty": 1, "length": 32})


# ---------------------------------------------------------------------------------------------
# Finalisers (pipeline builders)
# ---------------------------------------------------------------------------------------------

P64 = XXH64_PRIMES
P32 = XXH32_PRIMES


def stage_counts(levels: int | str) -> tuple[int, int, int, int]:
    """Stages of one 64-bit (XXH64) and one 32-bit (XXH32) constant multiply, and of a byte
    times PRIME64_5 / PRIME32_5, with ``levels`` adder levels per stage."""
    m64 = mul_depth(64, P64[1], 64, levels=levels)
    m32 = mul_depth(32, P32[1], 32, levels=levels)
    mb64 = mul_depth(8, P64[4], 64, levels=levels)
    mb32 = mul_depth(8, P32[4], 32, levels=levels)
    # Every step of a finaliser takes the same number of stages whatever its prime, so the
    # pipelines line up (checked, not assumed).
    assert all(mul_depth(64, c, 64, a, levels) == m64 for c in P64 for a in (0, P64[2], P64[3]))
    assert all(mul_depth(32, c, 32, 0, levels) == m32 for c in P32)
    assert mb64 <= m64 and mb32 <= m32
    return m64, m32, mb64, mb32


def _rot_terms(vs, rots, seed_p5, hs, extra=()):
    """Terms of ``hs ? rotl(v0,1) + rotl(v1,7) + rotl(v2,12) + rotl(v3,18) : seed + P5`` (plus
    ``extra``), summed by a tree instead of three chained adders."""
    zero = Const(0, len(seed_p5))
    terms = [(Mux(hs, vs[0].rotate_left(rots[0]), seed_p5), 0)]
    terms += [(Mux(hs, v.rotate_left(r), zero), 0) for v, r in zip(vs[1:], rots[1:])]
    return terms + [(Value.cast(e), 0) for e in extra]


def _avalanche(
    p: Pipe, primes: tuple[int, int], width: int, shifts: tuple[int, int, int], drop=(), x0=None
) -> None:
    """``h ^= h >> s0; h *= p0; h ^= h >> s1; h *= p1; h ^= h >> s2`` on field ``h`` (2
    multiplies + 1 stage); ``drop`` leaves at its first stage. ``x0``: the first operand
    (``h ^ h >> s0``) if the step before registered it (its ``then``, :data:`xxh64_avalanche_x`)."""
    if x0 is None:
        x0 = xorshift("h", shifts[0])(p.f)
    p.mul_step("h", x0, primes[0], width, Const(1), drop=drop, then=xorshift("h", shifts[1]))
    p.mul_step("h", p.take("h_x"), primes[1], width, Const(1))
    h = p["h"]
    p.stage(h=h ^ (h >> shifts[2]))


#: The XXH64 avalanche's first operand, for the step before it (``then``; pass the registered
#: field as ``xxh64_avalanche``'s ``x0``).
xxh64_avalanche_x = xorshift("h", 33)


def xxh64_avalanche(p: Pipe, drop=(), x0=None) -> None:
    """The XXH64 avalanche of field ``h``."""
    _avalanche(p, (P64[1], P64[2]), 64, (33, 29, 32), drop, x0)


def xxh32_avalanche(p: Pipe, drop=()) -> None:
    """The XXH32 avalanche of field ``h``."""
    _avalanche(p, (P32[1], P32[2]), 32, (15, 13, 16), drop)


def xxh64_finalize_depth(
    stripes: bool, max_words: int, four: bool, max_bytes: int, levels: int | str = 1
) -> int:
    M64, _, MB64, _ = stage_counts(levels)
    if stripes or max_words:
        first = 2 * M64  # round(0, .) of the tail words and v0..v3
    else:
        first = M64 if four else (MB64 if max_bytes else 1)
    # + 1 with stripes: the shared round(0, v) pipeline registers its input (see below)
    return first + (4 * M64 + 1 if stripes else 0) + 1 + M64 * (max_words + four + max_bytes) + 2 * M64 + 1


def _shared_round0(p: Pipe, name: str, feeds, premul: bool = False) -> int:
    """``round(0, x) = rotl(x * P2, 31) * P1`` for several fields of pipe ``p`` in one side
    pipeline instead of one per field (``premul``: the fields are ``x * P2`` already).
    ``feeds``: ``(offset, field, active, out)``: the record
    at depth ``p.depth + offset`` hands its ``field`` (then dropped) to the side pipeline when
    ``active(p)`` is true (read at that depth), and gets the result back as field ``out`` at
    depth ``p.depth + offset +`` the side pipeline's depth, which is returned. The caller
    guarantees that no two feeds are active in the same cycle (records that use a feed are far
    enough apart in the stream); the inputs are OR-ed, then registered, so a feed costs an AND
    and the multiplies are not behind the OR.
    """
    P1, P2 = P64[0], P64[1]
    m = p.m
    d0 = p.depth
    x = Signal(64, name=f"{name}_x")
    q = Pipe(m, name, levels=p.levels, behavioural=p.behavioural, x=x)
    q.stage()
    if premul:
        q.f["a"] = q.f.pop("x")
    else:
        q.mul_tree("a", q["x"], P2, 64)
        q.stage(drop=["x"])
        q.drain()
    q.mul_tree("b", q.wire(q["a"].rotate_left(31), "ax"), P1, 64)
    q.stage(drop=["a"])
    q.drain()
    out, depth = q["b"], q.depth
    gated = []
    for off, field, active, dest in feeds:
        g = Signal(64, name=f"{name}_{field}")
        gated.append(g)

        def feed(g=g, field=field, active=active):
            m.d.comb += g.eq(p.f.pop(field) & active(p).replicate(64))

        p.at(d0 + off, feed)
        p.at(d0 + off + depth, lambda dest=dest: p.f.__setitem__(dest, out))
    acc = gated[0]
    for g in gated[1:]:
        acc = acc | g
    m.d.comb += x.eq(acc)
    return depth


def xxh64_finalize(p: Pipe, seed_p5, *, stripes: bool, max_words: int, four: bool, max_bytes: int) -> None:
    """Extend pipe ``p`` (fields ``valid``, ``len``, [``hs``, ``v0..v3``], ``t0..``) with the XXH64
    finalisation; leaves the hash in field ``h``. Steps a record does not need are bypassed.
    With ``stripes`` (the record core) the tail words come as their products with P2 instead,
    ``p0..p{max_words-1}`` (the core's front computes ``word * P2`` for every word anyway), with
    ``tw``, the record's last word (the one that holds a 4-byte and byte tail, if any).

    Order: round(0, w) = rotl(w * P2, 31) * P1 of the tail words and of ``v0..v3`` (two
    multiplies, in parallel), the four merge rounds, ``h += len``, up to three word steps, the
    4-byte step, up to three byte steps, the avalanche. The 4-byte and byte products are started
    one step before they are needed, so they are not carried down the whole pipeline.

    With ``stripes`` (the record core, one word per cycle), rounds that only long records need
    share a multiplier pipeline (:func:`_shared_round0`): a record with stripes has at least 4
    words, so two of them reach the finaliser at least 4 cycles apart and ``v0..v3`` can enter one
    pipeline in 4 consecutive cycles (6 fewer 64-bit multiplies); a record with a second (third)
    tail word has at least 2 (3) words, so tail words 1 and 2 can share another one, in
    consecutive cycles (2 fewer). The merge rounds read ``round(0, v_j)`` ``j`` steps later, so
    the staggered results are in time. This relies on a record's ``len`` matching its words,
    which the engine's parser guarantees.
    """
    P1, P2, P3, P4, P5 = P64
    depth0 = p.depth
    r = p["len"][:5]  # bytes after the last full stripe
    nw = r[3:5]  # tail words after the stripes
    ntail = 0 if stripes else min(4, max_words + (1 if (four or max_bytes) else 0))
    tails = [p.wire(p[f"t{j}"], f"t{j}") for j in range(ntail)]
    upd = {"r": r}
    if four or max_bytes:
        # The word holding the 4-byte and byte tail (the record core: its last word), cut to
        # what the steps read, as it travels until the byte steps: the 4-byte chunk, then the
        # (up to 3) bytes after it.
        tw = p["tw"] if stripes else mux_index(nw, tails)
        upd["tw"] = Cat(tw[:32], Mux(r[2], tw[32:56], tw[:24])) if max_bytes else tw[:32]
    shared_kw = range(1, max_words) if stripes else range(0)
    kept = []  # fields a shared pipeline reads after this stage
    if stripes:
        if max_words:
            p.mul_tree("kw0", p.wire(p["p0"].rotate_left(31), "p0x"), P1, 64)
        vs = [p.wire(p[f"v{j}"], f"v{j}") for j in range(4)]
        p.tree("h", _rot_terms(vs, (1, 7, 12, 18), seed_p5, p["hs"]), 64)
        d_km = _shared_round0(
            p, "km", [(j, f"v{j}", lambda p: p["valid"] & p["hs"], f"km{j}") for j in range(4)]
        )
        _shared_round0(
            p,
            "kw",
            [(j - 1, f"p{j}", lambda p, j=j: p["valid"] & (p["len"][3:5] > j), f"kw{j}") for j in shared_kw],
            premul=True,
        )
        kept = [f"v{j}" for j in range(1, 4)] + [f"p{j}" for j in shared_kw if j > 1]
    else:
        for j in range(max_words):
            p.mul_tree(f"kw{j}", tails[j], P2, 64)
        upd["h"] = seed_p5

    def start_k4():
        p.mul_tree("k4", p.wire(p["tw"][:32], "k4x"), P1, 64)

    def start_kb():
        for i in range(max_bytes):
            p.mul_tree(f"kb{i}", p.wire(p["tw"].word_select(4 + i, 8), f"byte{i}"), P5, 64)

    if not (stripes or max_words):
        # Fixed 4-byte keys: nothing else runs first, start the tail products right away.
        p.f.update(upd)
        if four:
            start_k4()
        elif max_bytes:
            start_kb()
    p.stage(
        drop=[
            k
            for k in [f"t{j}" for j in range(ntail)]
            + [f"v{j}" for j in range(4)]
            + [f"p{j}" for j in range(max_words)]
            if k not in kept
        ],
        **upd,
    )
    p.drain()
    names = [] if stripes else [f"kw{j}" for j in range(max_words)]
    if names:
        for n in names:
            p.mul_tree(n + "r", p.wire(p[n].rotate_left(31), n + "x"), P1, 64)
        p.stage(drop=names)
        p.drain()
        for n in names:
            p.f[n] = p.f.pop(n + "r")
    # Merge rounds (only records with stripes): h = (h ^ round(0, v)) * P1 + P4.
    if stripes:
        # The shared pipeline registers its input: its first result comes one stage later.
        while p.depth < depth0 + d_km:
            p.stage()
        for j in range(4):
            p.mul_step("h", p["h"] ^ p[f"km{j}"], P1, 64, p["hs"], add=P4, drop=[f"km{j}"])
    # The avalanche's first operand is registered by the stage before it (``then``). A tail
    # step computes its own operand: it is conditional, and registered a stage earlier its
    # operand would leave the kept old value's copies untapped, a shift register (LUTs) on the
    # xc7.
    left = max_words + four + max_bytes
    h_len = (p["h"] + p["len"])[:64]
    if left:
        p.stage(drop=["hs", "len"], h=h_len)
    else:
        p.stage(drop=["hs", "len"], h=h_len, h_x=xxh64_avalanche_x({**p.f, "h": h_len}))

    def step(x: Value, prime: int, active: Value, add: int, drop: list[str]) -> None:
        # The last tail step registers the avalanche's first operand.
        nonlocal left
        left -= 1
        then = None if left else xxh64_avalanche_x
        p.mul_step("h", x, prime, 64, active, add=add, drop=drop, then=then)

    # h = rotl(h ^ k, r) * P + a per 8-byte word, 4-byte lane and byte left; the conditions
    # read the current stage's ``r`` (it moves with the record). The 4-byte and byte products
    # start one step ahead of their steps.
    for j in range(max_words):
        if j == max_words - 1:
            (start_k4 if four else start_kb if max_bytes else lambda: None)()
        step((p["h"] ^ p[f"kw{j}"]).rotate_left(27), P1, p["r"][3:5] > j, P4, [f"kw{j}"])
    if four:
        if max_bytes:
            start_kb()
        step((p["h"] ^ p["k4"]).rotate_left(23), P2, p["r"][2], P3, ["k4"] + ([] if max_bytes else ["tw"]))
    for i in range(max_bytes):
        step(
            (p["h"] ^ p[f"kb{i}"]).rotate_left(11),
            P1,
            p["r"][:2] > i,
            0,
            [f"kb{i}"] + (["tw"] if i == 0 else []),
        )
    xxh64_avalanche(p, drop=["r"], x0=p.take("h_x"))
    assert not p.busy() and not p.pending()
    assert p.depth - depth0 == xxh64_finalize_depth(stripes, max_words, four, max_bytes, p.levels)


def xxh32_finalize_depth(stripes: bool, max_lanes: int, max_bytes: int, levels: int | str = 1) -> int:
    M32 = stage_counts(levels)[1]
    return M32 + (M32 + 1) * (max_lanes + max_bytes) + 2 * M32 + 1


def xxh32_tail_byte(len_: Value, tails: list[Value], i: int) -> Value:
    """Byte ``i`` of the tail after the record's full 4-byte lanes (``len_ % 16 // 4`` of
    them) in the tail words ``tails``."""
    t = Cat(*tails)
    nl = len_[2:4]
    return mux_index(
        nl, [t.word_select(4 * q + i, 8) if 4 * q + i < len(t) // 8 else Const(0, 8) for q in range(4)]
    )


def xxh32_finalize(p: Pipe, seed_p5, *, stripes: bool, max_lanes: int, max_bytes: int) -> None:
    """XXH32 finalisation of pipe ``p`` (fields ``valid``, ``len``, [``hs``, ``v0..v3``], ``t0``,
    [``t1``], and optionally ``byte0..``: :func:`xxh32_tail_byte` computed a stage before);
    leaves the 32-bit hash in field ``h``.

    Each lane/byte step is ``h = rotl(h + k, r) * P``: the 32-bit add gets its own stage (``hk``)
    so that no stage holds two carry chains."""
    P1, P2, P3, P4, P5 = P32
    depth0 = p.depth
    r = p["len"][:4]
    tails = [p.wire(p[k], k) for k in ("t0", "t1") if k in p]
    t = Cat(*tails)
    lanes = [t.word_select(j, 32) for j in range(len(tails) * 2)]
    for j in range(max_lanes):
        p.mul_tree(f"kl{j}", lanes[j], P3, 32)
    for i in range(max_bytes):
        # byte i of the tail after the nl full 4-byte lanes
        if f"byte{i}" in p:
            byte = p[f"byte{i}"]
        else:
            byte = p.wire(xxh32_tail_byte(p["len"], tails, i), f"byte{i}")
        p.mul_tree(f"kb{i}", byte, P5, 32)
    ln = p["len"][:32]
    if stripes:
        vs = [p.wire(p[f"v{j}"], f"v{j}") for j in range(4)]
        p.tree("h", _rot_terms(vs, (1, 7, 12, 18), seed_p5, p["hs"], extra=[ln]), 32)
    else:
        p.tree("h", [(seed_p5, 0), (ln, 0)], 32)
    p.stage(
        drop=["t0", "t1", "hs", "v0", "v1", "v2", "v3", "len", *(f"byte{i}" for i in range(max_bytes))], r=r
    )
    p.drain()
    steps = [(f"kl{j}", 17, P4, p["r"][2:4] > j) for j in range(max_lanes)] + [
        (f"kb{i}", 11, P1, p["r"][:2] > i) for i in range(max_bytes)
    ]
    for j, (k, rot, prime, _) in enumerate(steps):
        p.stage(drop=[k], hk=(p["h"] + p[k])[:32])
        act = (p["r"][2:4] > j) if j < max_lanes else (p["r"][:2] > j - max_lanes)
        p.mul_step("h", p["hk"].rotate_left(rot), prime, 32, act, drop=["hk"])
    xxh32_avalanche(p, drop=["r"])
    assert not p.busy()
    assert p.depth - depth0 == xxh32_finalize_depth(stripes, max_lanes, max_bytes, p.levels)


# ---------------------------------------------------------------------------------------------
# The stripe loops
# ---------------------------------------------------------------------------------------------


def _loop_round(
    m, fe: Pipe, accs: list, lps: list, rot: int, prime: int, width: int, stages: int, redundant: bool = False
) -> list:
    """``rotl(acc + lp, rot) * prime`` for each (acc, lp) pair in ``stages`` register levels:
    one carry chain for the add, then carry-save levels (no carry chain) spread over the
    stages, then one final carry chain. Returns the combinational results of the last stage
    (the caller registers them in the lane accumulators). Used in the stripe loops, whose
    recurrence allows only ``stages`` cycles (XXH64: 4 lanes, XXH32: 2 word pairs).

    ``redundant``: the accumulators are kept in carry-save form, a ``(sum, carry)`` pair per
    lane: each ``acc`` is such a pair, the add becomes one carry-save level and a carry chain,
    and the result is returned as a pair without the final carry chain (the consumer of the
    accumulator adds the pair once, outside the loop). The loop then holds one carry chain
    instead of two, which is what the two-stage XXH32 loop needs."""
    if fe.behavioural:
        # Simulation flavour (see Pipe): the product as one ``*`` in the first stage, then the
        # same ``stages - 1`` registers as below, so the loop recurrence and every output keep
        # their cycles. A carry-save result is returned as ``(product, 0)``: it differs from the
        # LUT pair, but every reader of a pair only uses its sum.
        if redundant:
            xs = [(s + c + lp)[:width] for (s, c), lp in zip(accs, lps)]
        else:
            xs = [(acc + lp)[:width] for acc, lp in zip(accs, lps)]
        names = [f"lm{j}" for j in range(len(xs))]
        for k, x in zip(names, xs):
            fe.f[k] = (x.rotate_left(rot) * prime)[:width]
        for _ in range(stages - 1):
            fe.stage()
        outs = [fe.f.pop(k) for k in names]
        return [(v, Const(0, width)) for v in outs] if redundant else outs
    if redundant:
        xs = []
        for (acc_s, acc_c), lp in zip(accs, lps):
            a, b = csa_level([(acc_s, 0), (acc_c, 0), (lp, 0)], width)
            xs.append((term_value(a, width) + term_value(b, width))[:width])
    else:
        xs = [(acc + lp)[:width] for acc, lp in zip(accs, lps)]
    # CSA levels needed to reach two terms, spread so the first stage (which holds the add)
    # and the last (which holds the final add) get the fewest.
    n_levels = 0
    n = len(const_mul_terms(Signal(width), prime, width))
    while n > 2:
        n = n - n // 3
        n_levels += 1
    plan = [0] * stages
    mids = list(range(1, stages - 1))
    if redundant:
        # No final carry chain: the last stage takes as many levels as the middle ones.
        mids = list(range(1, stages))
    for _ in range(n_levels):
        free = [s for s in mids if plan[s] < (5 if redundant else 3)]
        s = min(free, key=lambda s: plan[s]) if free else min((stages - 1, 0), key=lambda s: plan[s])
        plan[s] += 1
    first = 0
    if plan[0] == 0 and stages > 1:
        # Nothing but the add in the first stage: register the (rotated) sum itself, not its
        # ~20 shifted copies.
        fe.stage(**{f"lx{j}": x.rotate_left(rot) for j, x in enumerate(xs)})
        terms = [const_mul_terms(fe[f"lx{j}"], prime, width) for j in range(len(xs))]
        first = 1
    else:
        terms = [
            const_mul_terms(fe.wire(x.rotate_left(rot), f"lx{j}"), prime, width) for j, x in enumerate(xs)
        ]
    for s in range(first, stages):
        for lv in range(plan[s]):
            terms = [csa_level(ts, width) for ts in terms]
            # Named: the next level reads every term twice (sum and majority).
            terms = [
                [(fe.wire(term_value(t, width), f"cs{j}_{lv}_{i}"), 0) for i, t in enumerate(ts)]
                for j, ts in enumerate(terms)
            ]
        if s == stages - 1:
            break
        upd = {}
        for j, ts in enumerate(terms):
            for i, t in enumerate(ts):
                upd[f"cs{j}_{i}"] = term_value(t, width)
        fe.stage(drop=[k for k in fe.f if k.startswith(("cs", "lx"))], **upd)
        terms = [[(fe[f"cs{j}_{i}"], 0) for i in range(len(ts))] for j, ts in enumerate(terms)]
    fe.f = {k: v for k, v in fe.f.items() if not k.startswith(("cs", "lx"))}
    if redundant:
        assert all(len(ts) == 2 for ts in terms)
        return [(term_value(ts[0], width), term_value(ts[1], width)) for ts in terms]
    return [sum((term_value(t, width) for t in ts[1:]), term_value(ts[0], width))[:width] for ts in terms]


# ---------------------------------------------------------------------------------------------
# Record cores
# ---------------------------------------------------------------------------------------------


class XXH64Core(wiring.Component):
    """XXH64 of variable-length records, one 64-bit word per cycle (see the module docstring).

    Ports: ``i`` In(stream of :data:`HashBeat`, always ready), ``o`` Out(stream of 64-bit
    hashes, always ready: the consumer must take every result), ``seed`` In(64).
    Latency ``FRONT + 1 + finaliser`` = :attr:`latency` cycles from the last word; throughput
    one word per cycle. ``adder_levels``: 1, 2 or ``"csa"`` (see the module docstring);
    ``multipliers``: ``"lut"`` or ``"behavioural"`` (simulation only; see the module docstring).
    """

    LOOP = 4  # a lane comes back every 4 words: the round may take 4 cycles

    def __init__(self, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        self._MustUse__silence = False
        # lane * P2, then the loop; the finaliser reads the loop's last stage
        self.FRONT = stage_counts(adder_levels)[0] + self.LOOP - 1
        self.latency = self.FRONT + 1 + xxh64_finalize_depth(True, 3, True, 3, adder_levels)
        super().__init__(
            {
                "i": In(stream.Signature(HashBeat, always_ready=True)),
                "o": Out(stream.Signature(64, always_ready=True)),
                "seed": In(64),
            }
        )

    def elaborate(self, platform):
        m = Module()
        P1, P2, P3, P4, P5 = P64
        seed = self.seed
        init = [Signal(64, name=f"init{k}", reset_less=True) for k in range(4)]
        seed_p5 = Signal(64, reset_less=True)
        # Registered once per batch (the seed is constant while records flow).
        m.d.sync += [
            init[0].eq((seed + ((P1 + P2) & MASK64))[:64]),
            init[1].eq((seed + P2)[:64]),
            init[2].eq(seed),
            init[3].eq((seed + ((-P1) & MASK64))[:64]),
            seed_p5.eq((seed + P5)[:64]),
        ]
        b = self.i.payload
        idx = Signal(32, reset_less=True)  # index of the next word within its record
        cur = Mux(b.first, 0, idx)
        with m.If(self.i.valid):
            m.d.sync += idx.eq(cur + 1)
        nsw = Cat(Const(0, 2), b.length[5:])  # words in full stripes: (L // 32) * 4
        fe = Pipe(
            m,
            "fe",
            levels=self.adder_levels,
            behavioural=self.behavioural,
            valid=self.i.valid,
            data=b.data,
            last=b.last,
            empty=b.empty,
            length=b.length,
            stripe=~b.empty & (cur < nsw),
            lane=cur[:2],
            fs=cur < 4,
            tidx=(cur - nsw)[:2],
        )
        lp_done = fe.depth + fe.mul_tree("lp", fe.wire(b.data, "data"), P2, 64)
        fe.stage()
        # While lp is in its tree, prepare the loop's accumulator select: ``ini`` is the
        # lane's init value on a record's first stripe (else 0), ``sel{k}`` the one-hot,
        # registered select of v[k] otherwise (each drives the 64 bits of one lane, not 256
        # through a compare).
        # ``hs`` (the record has a full stripe: length >= 32) as a register of its own here,
        # by the length register, carried to the finaliser: computed at the finaliser's
        # input, the 27-bit OR placed across the engine from both (10.38 and 10.44 ns, 9.15
        # and 8.97 of them routing, nextpnr seeds 2 and 3 of the engine's round 18).
        fe.stage(
            ini=Mux(fe["fs"], mux_index(fe["lane"], init), 0),
            hs=fe["length"][5:] != 0,
            **{f"sel{k}": ~fe["fs"] & (fe["lane"] == k) for k in range(4)},
        )
        assert fe.depth < lp_done, "the lp tree is at least three stages deep"
        while fe.depth < lp_done - 1:
            fe.stage()
        v = [Signal(64, name=f"v{k}", reset_less=True) for k in range(4)]
        # The loop reads v[lane] (or the init value on a record's first stripe) LOOP stages
        # after the same lane's previous word read it. v[lane] is selected a stage early, into
        # a register of its own (``vsel``), so the loop's first stage has a select of three
        # registers in front of its add (a one-hot select of nine inputs a bit there was the
        # engine's critical path at one placement). A stage early, the previous word of the
        # lane may still be in the loop's last stage (``fwd``): its result is then taken from
        # ``last``, the register of every cycle's loop result.
        new_fw = Signal(64, name="fe_new_fw")
        wr = [Signal(name=f"fe_wr{k}") for k in range(4)]  # the loop's last stage writes v[k]
        last = Signal(64, name="fe_last", reset_less=True)
        m.d.sync += last.eq(new_fw)
        fwd = Const(0)
        for k in range(4):
            fwd = fwd | (fe[f"sel{k}"] & wr[k])
        fe.stage(vsel=mux_index(fe["lane"], v), fwd=fwd)
        assert not fe.busy() and fe.depth == lp_done
        acc = Mux(fe["fwd"], last, Mux(fe["fs"], fe["ini"], fe["vsel"]))
        for k in ("vsel", "fwd"):
            del fe.f[k]
        lp = fe["lp"]
        for k in ("lp", "fs", "ini", "sel0", "sel1", "sel2", "sel3"):
            del fe.f[k]
        fe.f["lpt"] = lp  # word * P2 goes on: a tail word's product for the finaliser
        new = _loop_round(m, fe, [acc], [lp], 31, P1, 64, self.LOOP)[0]
        lane, stripe, valid = fe["lane"], fe["stripe"], fe["valid"]
        m.d.comb += new_fw.eq(new)
        for k in range(4):
            m.d.comb += wr[k].eq(valid & stripe & (lane == k))
            with m.If(wr[k]):
                m.d.sync += v[k].eq(new)
        vf = [Mux(stripe & (lane == k), new, v[k]) for k in range(4)]  # bypass this word
        # The tail: products word * P2 of tail words 0..2 (tail word 3 is always partial); the
        # partial word itself is the record's last, which enters the finaliser as ``tw``.
        tb = [Signal(64, name=f"tailp{k}", reset_less=True) for k in range(3)]
        tail_here = ~stripe & ~fe["empty"]
        for k in range(3):
            with m.If(valid & tail_here & (fe["tidx"] == k)):
                m.d.sync += tb[k].eq(fe["lpt"])
        tf = [Mux(tail_here & (fe["tidx"] == k), fe["lpt"], tb[k]) for k in range(3)]
        assert fe.depth == self.FRONT, (fe.depth, self.FRONT)
        fin = Pipe(
            m,
            "fin",
            levels=self.adder_levels,
            behavioural=self.behavioural,
            valid=valid & fe["last"],
            len=fe["length"],
            hs=fe["hs"],
            **{f"v{k}": vf[k] for k in range(4)},
            **{f"p{k}": tf[k] for k in range(3)},
            tw=fe["data"],
        )
        # The bypassed accumulator ends in the loop's last adder: register it before the
        # finaliser's first adder level (two carry chains in one stage were the core's slowest path).
        fin.stage()
        xxh64_finalize(fin, seed_p5, stripes=True, max_words=3, four=True, max_bytes=3)
        m.d.comb += [self.o.valid.eq(fin["valid"]), self.o.payload.eq(fin["h"])]
        assert fe.depth + fin.depth == self.latency
        return m


class XXH32Core(wiring.Component):
    """XXH32 of variable-length records, one 64-bit word (two 32-bit lanes) per cycle.

    Ports: ``i`` In(stream of :data:`HashBeat`, always ready), ``o`` Out(stream of 32-bit hashes,
    always ready), ``seed`` In(32). Latency :attr:`latency` cycles from the last word.
    ``adder_levels``, ``multipliers``: as :class:`XXH64Core`.
    """

    LOOP = 2  # a lane pair comes back every 2 words

    def __init__(self, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        self._MustUse__silence = False
        self.FRONT = stage_counts(adder_levels)[1] + self.LOOP - 1
        # + 2: the accumulators' register and their carry-propagate add (see elaborate)
        self.latency = self.FRONT + 2 + xxh32_finalize_depth(True, 3, 3, adder_levels)
        super().__init__(
            {
                "i": In(stream.Signature(HashBeat, always_ready=True)),
                "o": Out(stream.Signature(32, always_ready=True)),
                "seed": In(32),
            }
        )

    def elaborate(self, platform):
        m = Module()
        P1, P2, P3, P4, P5 = P32
        seed = self.seed
        init = [Signal(32, name=f"init{k}", reset_less=True) for k in range(4)]
        seed_p5 = Signal(32, reset_less=True)
        m.d.sync += [
            init[0].eq((seed + ((P1 + P2) & MASK32))[:32]),
            init[1].eq((seed + P2)[:32]),
            init[2].eq(seed),
            init[3].eq((seed + ((-P1) & MASK32))[:32]),
            seed_p5.eq((seed + P5)[:32]),
        ]
        b = self.i.payload
        idx = Signal(32, reset_less=True)
        cur = Mux(b.first, 0, idx)
        with m.If(self.i.valid):
            m.d.sync += idx.eq(cur + 1)
        nsw = Cat(Const(0, 1), b.length[4:])  # words in full 16-byte stripes
        fe = Pipe(
            m,
            "fe",
            levels=self.adder_levels,
            behavioural=self.behavioural,
            valid=self.i.valid,
            data=b.data,
            last=b.last,
            empty=b.empty,
            length=b.length,
            stripe=~b.empty & (cur < nsw),
            pair=cur[0],
            fs=cur < 2,
            tidx=(cur - nsw)[0],
        )
        for half in range(2):
            fe.mul_tree(f"lp{half}", fe.wire(b.data.word_select(half, 32), f"d{half}"), P2, 32)
        fe.stage()
        fe.drain()
        # The accumulators in carry-save form (sum, carry): see _loop_round.
        vs = [Signal(32, name=f"v{k}_s", reset_less=True) for k in range(4)]
        vc = [Signal(32, name=f"v{k}_c", reset_less=True) for k in range(4)]
        accs = [
            (
                Mux(fe["fs"], Mux(fe["pair"], init[2 + h], init[h]), Mux(fe["pair"], vs[2 + h], vs[h])),
                Mux(fe["fs"], 0, Mux(fe["pair"], vc[2 + h], vc[h])),
            )
            for h in range(2)
        ]
        lps = [fe["lp0"], fe["lp1"]]
        for k in ("lp0", "lp1", "fs"):
            del fe.f[k]
        new = _loop_round(m, fe, accs, lps, 13, P1, 32, self.LOOP, redundant=True)
        pair, stripe, valid = fe["pair"], fe["stripe"], fe["valid"]
        vf = []
        for k in range(4):
            hit = stripe & (pair == (k >> 1))
            with m.If(valid & hit):
                m.d.sync += [vs[k].eq(new[k & 1][0]), vc[k].eq(new[k & 1][1])]
            vf.append((Mux(hit, new[k & 1][0], vs[k]), Mux(hit, new[k & 1][1], vc[k])))
        tb = [Signal(64, name=f"tail{k}", reset_less=True) for k in range(2)]
        tail_here = ~stripe & ~fe["empty"]
        for k in range(2):
            with m.If(valid & tail_here & (fe["tidx"] == k)):
                m.d.sync += tb[k].eq(fe["data"])
        tf = [Mux(tail_here & (fe["tidx"] == k), fe["data"], tb[k]) for k in range(2)]
        assert fe.depth == self.FRONT, (fe.depth, self.FRONT)
        fin = Pipe(
            m,
            "fin",
            levels=self.adder_levels,
            behavioural=self.behavioural,
            valid=valid & fe["last"],
            len=fe["length"],
            hs=fe["length"][4:] != 0,
            **{f"v{k}_s": vf[k][0] for k in range(4)},
            **{f"v{k}_c": vf[k][1] for k in range(4)},
            t0=tf[0],
            t1=tf[1],
        )
        # The accumulators (a record's last stripe comes straight from the loop's carry-save
        # logic) are registered first, then leave carry-save form: one carry chain, in a stage
        # of its own. Added in one stage, the loop's carry-save levels and that carry chain were
        # one path, the engine's routed critical path (10.33 ns, 7.35 of it routing).
        fin.stage()
        # The tail's bytes are picked here, beside the accumulators' add, not in front of their
        # products' first adder (a 4:1 select and a carry chain in one stage, the engine's
        # critical path at one placement).
        fin.stage(
            drop=[f"v{k}_{x}" for k in range(4) for x in "sc"],
            **{f"v{k}": (fin[f"v{k}_s"] + fin[f"v{k}_c"])[:32] for k in range(4)},
            **{f"byte{i}": xxh32_tail_byte(fin["len"], [fin["t0"], fin["t1"]], i) for i in range(3)},
        )
        xxh32_finalize(fin, seed_p5, stripes=True, max_lanes=3, max_bytes=3)
        m.d.comb += [self.o.valid.eq(fin["valid"]), self.o.payload.eq(fin["h"])]
        assert fe.depth + fin.depth == self.latency
        return m


# ---------------------------------------------------------------------------------------------
# Fixed-width cores
# ---------------------------------------------------------------------------------------------


class XXH64Fixed(wiring.Component):
    """XXH64 of one fixed ``key_bytes``-byte key (4 or 8) per cycle.

    Ports: ``i`` In(stream of 64-bit words, always ready; a 4-byte key is the low half),
    ``o`` Out(stream of 64-bit hashes, always ready), ``seed`` In(64).
    Latency :attr:`latency` cycles, throughput one key per cycle, no reset needed but ``valid``.
    ``adder_levels``, ``multipliers``: as :class:`XXH64Core`.
    """

    def __init__(self, key_bytes: int = 8, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        self.key_bytes = check_choice("key_bytes", key_bytes, (4, 8))
        set_multiplier_params(self, adder_levels, multipliers)
        self._MustUse__silence = False
        self.latency = xxh64_finalize_depth(
            False, 1 if key_bytes == 8 else 0, key_bytes == 4, 0, adder_levels
        )
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "o": Out(stream.Signature(64, always_ready=True)),
                "seed": In(64),
            }
        )

    def elaborate(self, platform):
        m = Module()
        seed_p5 = Signal(64, reset_less=True)
        m.d.sync += seed_p5.eq((self.seed + P64[4])[:64])
        p = Pipe(
            m,
            "fx",
            levels=self.adder_levels,
            behavioural=self.behavioural,
            valid=self.i.valid,
            len=Const(self.key_bytes, 32),
            t0=self.i.payload,
        )
        xxh64_finalize(
            p,
            seed_p5,
            stripes=False,
            max_words=1 if self.key_bytes == 8 else 0,
            four=self.key_bytes == 4,
            max_bytes=0,
        )
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["h"])]
        return m


class XXH32Fixed(wiring.Component):
    """XXH32 of one fixed ``key_bytes``-byte key (4 or 8) per cycle. Ports as :class:`XXH64Fixed`
    with a 32-bit ``seed`` and 32-bit results."""

    def __init__(self, key_bytes: int = 4, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        self.key_bytes = check_choice("key_bytes", key_bytes, (4, 8))
        set_multiplier_params(self, adder_levels, multipliers)
        self._MustUse__silence = False
        self.latency = xxh32_finalize_depth(False, key_bytes // 4, 0, adder_levels)
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "o": Out(stream.Signature(32, always_ready=True)),
                "seed": In(32),
            }
        )

    def elaborate(self, platform):
        m = Module()
        seed_p5 = Signal(32, reset_less=True)
        m.d.sync += seed_p5.eq((self.seed + XXH32_PRIMES[4])[:32])
        p = Pipe(
            m,
            "fx",
            levels=self.adder_levels,
            behavioural=self.behavioural,
            valid=self.i.valid,
            len=Const(self.key_bytes, 32),
            t0=self.i.payload,
        )
        xxh32_finalize(p, seed_p5, stripes=False, max_lanes=self.key_bytes // 4, max_bytes=0)
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["h"])]
        return m
