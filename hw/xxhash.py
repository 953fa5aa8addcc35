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
   not depend on ``acc``) and only ``rotl(acc + .)*P1`` (2 stages) sits in the loop.
2. *Tail buffer.* Words after the last full stripe (at most 4; XXH32: 2) are kept.
3. *Finaliser.* On a record's last word, ``v1..v4``, the tail words and the length enter a fully
   unrolled pipeline (merge rounds, up to 3 word steps, the 4-byte step, up to 3 byte steps,
   avalanche), each step a registered 2-stage multiply that is bypassed when the record is too
   short for it. Records are independent, so one record can enter per cycle.

Ports (all cores): ``i`` (stream in, never stalls: ``ready`` is always 1), ``o`` (stream out,
must always be accepted: ``valid`` for one cycle per record), ``seed`` (held stable during a
batch; derived init values are registered, so allow 2 cycles after a change before the first
word). Reset: the synchronous ``rst`` clears only ``valid`` and the word counter state; data
registers need no reset. Latency: ``self.latency`` cycles from a record's last word on ``i`` to
its result on ``o``. Throughput: one input word per cycle, any mix of records.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from offload.golden import MASK32, MASK64, XXH32_PRIMES, XXH64_PRIMES

from .common import Pipe, check_choice, mul_partials, mul_sum, mux_index

__all__ = ["HashBeat", "XXH64Core", "XXH32Core", "XXH64Fixed", "XXH32Fixed",
           "xxh64_finalize", "xxh32_finalize"]

#: One input word of a record: ``first`` on the record's first beat, ``last`` on its last,
#: ``empty`` for a beat that carries no data (a 0-byte record is one beat with first, last and
#: empty set), ``length`` = the record's byte length (held on every beat of the record).
HashBeat = data.StructLayout({"data": 64, "first": 1, "last": 1, "empty": 1, "length": 32})


# ---------------------------------------------------------------------------------------------
# Finalisers (pipeline builders)
# ---------------------------------------------------------------------------------------------

def xxh64_finalize_depth(stripes: bool, max_words: int, four: bool, max_bytes: int) -> int:
    return 4 + (8 if stripes else 0) + 1 + 2 * max_words + (2 if four else 0) + 2 * max_bytes + 5


def xxh64_finalize(p: Pipe, seed_p5, *, stripes: bool, max_words: int, four: bool,
                   max_bytes: int) -> None:
    """Extend pipe ``p`` (fields ``valid``, ``len``, [``hs``, ``v0..v3``], ``t0..``) with the XXH64
    finalisation; leaves the hash in field ``h``. Steps a record does not need are bypassed."""
    P1, P2, P3, P4, P5 = XXH64_PRIMES
    depth0 = p.depth
    r = p["len"][:5]                       # bytes after the last full stripe
    nw, has4, nb = r[3:5], r[2], r[:2]
    ntail = min(4, max_words + (1 if (four or max_bytes) else 0))
    tails = [p[f"t{j}"] for j in range(ntail)]
    tw = mux_index(nw, tails) if ntail else Const(0, 64)   # word holding the 4-byte/byte tail
    upd = {"r": r}
    # Level 1 of the independent products: round(0, w) needs w*P2 then *P1.
    for j in range(max_words):
        for k, v in mul_partials(tails[j], P2, 64).items():
            upd[f"kw{j}_{k}"] = v
    if stripes:
        for j in range(4):
            for k, v in mul_partials(p[f"v{j}"], P2, 64).items():
                upd[f"km{j}_{k}"] = v
        vs = [p[f"v{j}"] for j in range(4)]
        conv = (vs[0].rotate_left(1) + vs[1].rotate_left(7) + vs[2].rotate_left(12)
                + vs[3].rotate_left(18))[:64]
        upd["h"] = Mux(p["hs"], conv, seed_p5)
    else:
        upd["h"] = seed_p5
    if four:
        for k, v in mul_partials(Cat(tw[:32], Const(0, 32)), P1, 64).items():
            upd[f"k4_{k}"] = v
    for i in range(max_bytes):
        byte = Mux(has4, tw.word_select(4 + i, 8), tw.word_select(i, 8))
        upd[f"kb{i}"] = (byte * P5)[:64]
    p.stage(drop=[f"t{j}" for j in range(ntail)] + [f"v{j}" for j in range(4)], **upd)
    # Level 1 sums.
    upd = {}
    names = [f"kw{j}" for j in range(max_words)] + ([f"km{j}" for j in range(4)] if stripes else [])
    for n in names:
        upd[n] = mul_sum({k: p[f"{n}_{k}"] for k in ("p0", "p1", "p2")}, 64)
    if four:
        upd["k4"] = mul_sum({k: p[f"k4_{k}"] for k in ("p0", "p1", "p2")}, 64)
    drop = [f"{n}_{k}" for n in names + (["k4"] if four else []) for k in ("p0", "p1", "p2")]
    p.stage(drop=drop, **upd)
    # Level 2: rotl(., 31) * P1.
    upd = {}
    for n in names:
        for k, v in mul_partials(p[n].rotate_left(31), P1, 64).items():
            upd[f"{n}_{k}"] = v
    p.stage(drop=names, **upd)
    upd = {n: mul_sum({k: p[f"{n}_{k}"] for k in ("p0", "p1", "p2")}, 64) for n in names}
    p.stage(drop=[f"{n}_{k}" for n in names for k in ("p0", "p1", "p2")], **upd)
    # Merge rounds (only records with stripes): h = (h ^ round(0, v)) * P1 + P4.
    if stripes:
        for j in range(4):
            p.mul_step("h", p["h"] ^ p[f"km{j}"], P1, 64, p["hs"], add=P4, drop=[f"km{j}"])
        p.stage(drop=["hs"])
    else:
        p.stage()
    p.f["h"] = (p["h"] + p["len"])[:64]          # folded into the next stage's input
    # The step conditions are re-read from the current stage's ``r`` (it moves with the record).
    for j in range(max_words):
        p.mul_step("h", (p["h"] ^ p[f"kw{j}"]).rotate_left(27), P1, 64, p["r"][3:5] > j, add=P4,
                   drop=[f"kw{j}"])
    if four:
        p.mul_step("h", (p["h"] ^ p["k4"]).rotate_left(23), P2, 64, p["r"][2], add=P3,
                   drop=["k4"])
    for i in range(max_bytes):
        p.mul_step("h", (p["h"] ^ p[f"kb{i}"]).rotate_left(11), P1, 64, p["r"][:2] > i,
                   drop=[f"kb{i}"])
    # Avalanche.
    h = p["h"]
    p.mul_step("h", h ^ (h >> 33), P2, 64, Const(1), drop=["r", "len"])
    h = p["h"]
    p.mul_step("h", h ^ (h >> 29), P3, 64, Const(1))
    h = p["h"]
    p.stage(h=h ^ (h >> 32))
    assert p.depth - depth0 == xxh64_finalize_depth(stripes, max_words, four, max_bytes)


def xxh32_finalize_depth(stripes: bool, max_lanes: int, max_bytes: int) -> int:
    return 2 + 2 * max_lanes + 2 * max_bytes + 5


def xxh32_finalize(p: Pipe, seed_p5, *, stripes: bool, max_lanes: int, max_bytes: int) -> None:
    """XXH32 finalisation of pipe ``p`` (fields ``valid``, ``len``, [``hs``, ``v0..v3``], ``t0``,
    [``t1``]); leaves the 32-bit hash in field ``h``."""
    P1, P2, P3, P4, P5 = XXH32_PRIMES
    depth0 = p.depth
    r = p["len"][:4]
    nl, nb = r[2:4], r[:2]
    tails = [p[k] for k in ("t0", "t1") if k in p]
    t = Cat(*tails)
    lanes = [t.word_select(j, 32) for j in range(len(tails) * 2)]
    upd = {"r": r}
    for j in range(max_lanes):
        for k, v in mul_partials(lanes[j], P3, 32).items():
            upd[f"kl{j}_{k}"] = v
    for i in range(max_bytes):
        # byte i of the tail after the nl full 4-byte lanes
        byte = mux_index(nl, [t.word_select(4 * q + i, 8) if 4 * q + i < len(t) // 8 else Const(0, 8)
                              for q in range(4)])
        upd[f"kb{i}"] = (byte * P5)[:32]
    if stripes:
        vs = [p[f"v{j}"] for j in range(4)]
        conv = (vs[0].rotate_left(1) + vs[1].rotate_left(7) + vs[2].rotate_left(12)
                + vs[3].rotate_left(18))[:32]
        upd["h"] = Mux(p["hs"], conv, seed_p5)
    else:
        upd["h"] = seed_p5
    p.stage(drop=["t0", "t1", "hs", "v0", "v1", "v2", "v3"], **upd)
    upd = {f"kl{j}": mul_sum({k: p[f"kl{j}_{k}"] for k in ("p0", "p1", "p2")}, 32)
           for j in range(max_lanes)}
    upd["h"] = (p["h"] + p["len"])[:32]
    p.stage(drop=[f"kl{j}_{k}" for j in range(max_lanes) for k in ("p0", "p1", "p2")] + ["len"],
            **upd)
    for j in range(max_lanes):
        p.mul_step("h", (p["h"] + p[f"kl{j}"])[:32].rotate_left(17), P4, 32, p["r"][2:4] > j,
                   drop=[f"kl{j}"])
    for i in range(max_bytes):
        p.mul_step("h", (p["h"] + p[f"kb{i}"])[:32].rotate_left(11), P1, 32, p["r"][:2] > i,
                   drop=[f"kb{i}"])
    h = p["h"]
    p.mul_step("h", h ^ (h >> 15), P2, 32, Const(1), drop=["r"])
    h = p["h"]
    p.mul_step("h", h ^ (h >> 13), P3, 32, Const(1))
    h = p["h"]
    p.stage(h=h ^ (h >> 16))
    assert p.depth - depth0 == xxh32_finalize_depth(stripes, max_lanes, max_bytes)


# ---------------------------------------------------------------------------------------------
# Record cores
# ---------------------------------------------------------------------------------------------

class XXH64Core(wiring.Component):
    """XXH64 of variable-length records, one 64-bit word per cycle (see the module docstring).

    Ports: ``i`` In(stream of :data:`HashBeat`, always ready), ``o`` Out(stream of 64-bit
    hashes, always ready: the consumer must take every result), ``seed`` In(64).
    Latency ``FRONT + finaliser`` = :attr:`latency` cycles from the last word; throughput one word
    per cycle.
    """

    FRONT = 3

    def __init__(self):
        self.latency = self.FRONT + xxh64_finalize_depth(True, 3, True, 3)
        super().__init__({
            "i": In(stream.Signature(HashBeat, always_ready=True)),
            "o": Out(stream.Signature(64, always_ready=True)),
            "seed": In(64),
        })

    def elaborate(self, platform):
        m = Module()
        P1, P2, P3, P4, P5 = XXH64_PRIMES
        seed = self.seed
        init = [Signal(64, name=f"init{k}") for k in range(4)]
        seed_p5 = Signal(64)
        # Registered once per batch (the seed is constant while records flow).
        m.d.sync += [
            init[0].eq((seed + ((P1 + P2) & MASK64))[:64]),
            init[1].eq((seed + P2)[:64]),
            init[2].eq(seed),
            init[3].eq((seed + ((-P1) & MASK64))[:64]),
            seed_p5.eq((seed + P5)[:64]),
        ]
        b = self.i.payload
        idx = Signal(32)                       # index of the next word within its record
        cur = Mux(b.first, 0, idx)
        with m.If(self.i.valid):
            m.d.sync += idx.eq(cur + 1)
        nsw = Cat(Const(0, 2), b.length[5:])   # words in full stripes: (L // 32) * 4
        fe = Pipe(m, "fe", valid=self.i.valid, data=b.data, last=b.last, empty=b.empty,
                  length=b.length, stripe=~b.empty & (cur < nsw), lane=cur[:2], fs=cur < 4,
                  tidx=(cur - nsw)[:2])
        fe.stage(**{f"lp_{k}": v for k, v in mul_partials(b.data, P2, 64).items()})
        fe.stage(drop=["lp_p0", "lp_p1", "lp_p2"],
                 lp=mul_sum({k: fe[f"lp_{k}"] for k in ("p0", "p1", "p2")}, 64))
        v = [Signal(64, name=f"v{k}") for k in range(4)]
        # The loop: read v[lane] (or the init value on a record's first stripe), 2 stages back.
        acc = Mux(fe["fs"], mux_index(fe["lane"], init), mux_index(fe["lane"], v))
        x = (acc + fe["lp"])[:64].rotate_left(31)
        fe.stage(drop=["lp", "fs"], **{f"ap_{k}": v_ for k, v_ in mul_partials(x, P1, 64).items()})
        new = mul_sum({k: fe[f"ap_{k}"] for k in ("p0", "p1", "p2")}, 64)
        lane, stripe, valid = fe["lane"], fe["stripe"], fe["valid"]
        for k in range(4):
            with m.If(valid & stripe & (lane == k)):
                m.d.sync += v[k].eq(new)
        vf = [Mux(stripe & (lane == k), new, v[k]) for k in range(4)]   # bypass this word
        tb = [Signal(64, name=f"tail{k}") for k in range(4)]
        tail_here = ~stripe & ~fe["empty"]
        for k in range(4):
            with m.If(valid & tail_here & (fe["tidx"] == k)):
                m.d.sync += tb[k].eq(fe["data"])
        tf = [Mux(tail_here & (fe["tidx"] == k), fe["data"], tb[k]) for k in range(4)]
        assert fe.depth == self.FRONT
        fin = Pipe(m, "fin", valid=valid & fe["last"], len=fe["length"],
                   hs=fe["length"][5:] != 0, **{f"v{k}": vf[k] for k in range(4)},
                   **{f"t{k}": tf[k] for k in range(4)})
        xxh64_finalize(fin, seed_p5, stripes=True, max_words=3, four=True, max_bytes=3)
        m.d.comb += [self.o.valid.eq(fin["valid"]), self.o.payload.eq(fin["h"])]
        assert fe.depth + fin.depth == self.latency
        return m


class XXH32Core(wiring.Component):
    """XXH32 of variable-length records, one 64-bit word (two 32-bit lanes) per cycle.

    Ports: ``i`` In(stream of :data:`HashBeat`, always ready), ``o`` Out(stream of 32-bit hashes,
    always ready), ``seed`` In(32). Latency :attr:`latency` cycles from the last word.
    """

    FRONT = 3

    def __init__(self):
        self.latency = self.FRONT + xxh32_finalize_depth(True, 3, 3)
        super().__init__({
            "i": In(stream.Signature(HashBeat, always_ready=True)),
            "o": Out(stream.Signature(32, always_ready=True)),
            "seed": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        P1, P2, P3, P4, P5 = XXH32_PRIMES
        seed = self.seed
        init = [Signal(32, name=f"init{k}") for k in range(4)]
        seed_p5 = Signal(32)
        m.d.sync += [
            init[0].eq((seed + ((P1 + P2) & MASK32))[:32]),
            init[1].eq((seed + P2)[:32]),
            init[2].eq(seed),
            init[3].eq((seed + ((-P1) & MASK32))[:32]),
            seed_p5.eq((seed + P5)[:32]),
        ]
        b = self.i.payload
        idx = Signal(32)
        cur = Mux(b.first, 0, idx)
        with m.If(self.i.valid):
            m.d.sync += idx.eq(cur + 1)
        nsw = Cat(Const(0, 1), b.length[4:])   # words in full 16-byte stripes
        fe = Pipe(m, "fe", valid=self.i.valid, data=b.data, last=b.last, empty=b.empty,
                  length=b.length, stripe=~b.empty & (cur < nsw), pair=cur[0], fs=cur < 2,
                  tidx=(cur - nsw)[0])
        upd = {}
        for half in range(2):
            for k, v in mul_partials(b.data.word_select(half, 32), P2, 32).items():
                upd[f"lp{half}_{k}"] = v
        fe.stage(**upd)
        fe.stage(drop=[f"lp{h}_{k}" for h in range(2) for k in ("p0", "p1", "p2")],
                 **{f"lp{h}": mul_sum({k: fe[f"lp{h}_{k}"] for k in ("p0", "p1", "p2")}, 32)
                    for h in range(2)})
        v = [Signal(32, name=f"v{k}") for k in range(4)]
        upd = {}
        for half in range(2):
            acc = Mux(fe["fs"], Mux(fe["pair"], init[2 + half], init[half]),
                      Mux(fe["pair"], v[2 + half], v[half]))
            x = (acc + fe[f"lp{half}"])[:32].rotate_left(13)
            for k, v_ in mul_partials(x, P1, 32).items():
                upd[f"ap{half}_{k}"] = v_
        fe.stage(drop=["lp0", "lp1", "fs"], **upd)
        new = [mul_sum({k: fe[f"ap{h}_{k}"] for k in ("p0", "p1", "p2")}, 32) for h in range(2)]
        pair, stripe, valid = fe["pair"], fe["stripe"], fe["valid"]
        vf = []
        for k in range(4):
            hit = stripe & (pair == (k >> 1))
            with m.If(valid & hit):
                m.d.sync += v[k].eq(new[k & 1])
            vf.append(Mux(hit, new[k & 1], v[k]))
        tb = [Signal(64, name=f"tail{k}") for k in range(2)]
        tail_here = ~stripe & ~fe["empty"]
        for k in range(2):
            with m.If(valid & tail_here & (fe["tidx"] == k)):
                m.d.sync += tb[k].eq(fe["data"])
        tf = [Mux(tail_here & (fe["tidx"] == k), fe["data"], tb[k]) for k in range(2)]
        assert fe.depth == self.FRONT
        fin = Pipe(m, "fin", valid=valid & fe["last"], len=fe["length"],
                   hs=fe["length"][4:] != 0, **{f"v{k}": vf[k] for k in range(4)},
                   t0=tf[0], t1=tf[1])
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
    """

    def __init__(self, key_bytes: int = 8):
        self._MustUse__silence = True      # no UnusedElaboratable warning if rejected
        self.key_bytes = check_choice("key_bytes", key_bytes, (4, 8))
        self._MustUse__silence = False
        self.latency = xxh64_finalize_depth(False, 1 if key_bytes == 8 else 0, key_bytes == 4, 0)
        super().__init__({
            "i": In(stream.Signature(64, always_ready=True)),
            "o": Out(stream.Signature(64, always_ready=True)),
            "seed": In(64),
        })

    def elaborate(self, platform):
        m = Module()
        seed_p5 = Signal(64)
        m.d.sync += seed_p5.eq((self.seed + XXH64_PRIMES[4])[:64])
        p = Pipe(m, "fx", valid=self.i.valid, len=Const(self.key_bytes, 32), t0=self.i.payload)
        xxh64_finalize(p, seed_p5, stripes=False, max_words=1 if self.key_bytes == 8 else 0,
                       four=self.key_bytes == 4, max_bytes=0)
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["h"])]
        return m


class XXH32Fixed(wiring.Component):
    """XXH32 of one fixed ``key_bytes``-byte key (4 or 8) per cycle. Ports as :class:`XXH64Fixed`
    with a 32-bit ``seed`` and 32-bit results."""

    def __init__(self, key_bytes: int = 4):
        self._MustUse__silence = True      # no UnusedElaboratable warning if rejected
        self.key_bytes = check_choice("key_bytes", key_bytes, (4, 8))
        self._MustUse__silence = False
        self.latency = xxh32_finalize_depth(False, key_bytes // 4, 0)
        super().__init__({
            "i": In(stream.Signature(64, always_ready=True)),
            "o": Out(stream.Signature(32, always_ready=True)),
            "seed": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        seed_p5 = Signal(32)
        m.d.sync += seed_p5.eq((self.seed + XXH32_PRIMES[4])[:32])
        p = Pipe(m, "fx", valid=self.i.valid, len=Const(self.key_bytes, 32), t0=self.i.payload)
        xxh32_finalize(p, seed_p5, stripes=False, max_lanes=self.key_bytes // 4, max_bytes=0)
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["h"])]
        return m
