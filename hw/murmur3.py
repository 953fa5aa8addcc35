"""MurmurHash3_x86_32 cores, bit-exact with :func:`offload.golden_murmur3.murmur3_32` (both tails).

Two cores:

* :class:`Murmur3Core`: records of any length streamed as 64-bit little-endian words, in the
  framing of the XXH record cores (:data:`~offload.hw.xxhash.HashBeat`: ``data``, ``first``,
  ``last``, ``empty``, ``length``), one word per cycle for any mix of lengths, so the engine can
  put it in the lane beside :class:`~offload.hw.xxhash.XXH32Core`.
* :class:`Murmur3Lane`: one 4- or 8-byte key per cycle (``key8``), padded to a given latency,
  like the XXH lanes of :mod:`offload.hw.lanes` (both tails agree on whole 4-byte blocks).

Structure of the record core (why it sustains one word per cycle):

1. *Front.* ``mix_k1`` (``rotl(k * c1, 15) * c2``) of both 4-byte blocks of every word, as two
   pipelined constant multiplies each (adder trees, :mod:`offload.hw.common`). It does not depend
   on the state, so it runs ahead. The last word's bytes beyond the record are zeroed first, so
   the standard tail's word (the partial block, zero-padded) comes out of the same multipliers.
2. *Loop.* Murmur3's state round ``rotl(h ^ k, 13) * 5 + 0xe6546b64`` is strictly sequential
   within a record, and a word holds two blocks, so the loop does two rounds per cycle: each
   round is one LUT level (the xor folded into a carry-save level of ``x + (x << 2) + const``)
   and one 32-bit carry chain, and nothing else is in the loop: the state register ``H`` is
   cleared (a synchronous reset of the flip-flops) on a record's last word, and a record's first
   word reads the seed through its block value (``k0 ^ seed``, prepared in the front), so the
   seed mux is not in the loop either. Records are back to back: the word after a last word is
   the next record's first.
3. *Finaliser.* On a record's last word, the state before that word and the word's block values
   leave the loop into a fully unrolled pipeline (records are independent from here), which
   redoes the word's rounds over its full blocks, one carry chain a stage, so nothing but the
   state register reads the loop's chains; then the standard tail (xor of the
   partial block's ``mix_k1``) or Spark's tail (one full round per trailing byte, sign-extended:
   up to three rounds, one per stage, each byte's ``mix_k1`` read from a 256-entry table computed
   from the golden model, one block-RAM read port per byte, registered before use), then
   ``h ^= length`` and fmix32 (two pipelined constant multiplies).

Multipliers: as the XXH cores, no DSP blocks: constant multiplies as adder trees in LUTs
(``multipliers="lut"``, what is synthesised) or the behavioural simulation flavour (one ``*``
through a delay line of the same depth, cycle-identical at the ports); ``adder_levels`` as the
XXH cores (:data:`~offload.hw.common.ADDER_LEVELS`).

Ports (record core): ``i`` In(stream of :data:`~offload.hw.xxhash.HashBeat`, always ready), ``o``
Out(stream of 32-bit hashes, always ready: the consumer takes every result), ``seed`` In(32) and
``spark_tail`` In(1), both read with the record's beats: ``seed`` on its first beat,
``spark_tail`` on its last, so they may change from one record to the next (the engine holds
them per batch). Reset: the synchronous ``rst`` clears the ``valid`` bits and the loop's state
register (the state a record's first word expects); data registers need none. Latency
:attr:`Murmur3Core.latency` cycles from a record's last word to its result; throughput one
input word per cycle, any mix of records, idle cycles allowed anywhere. The framing must be
consistent (``length`` matches the words, one ``first`` ... one ``last``), as the engine's parser
guarantees.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from offload.golden_murmur3 import (
    MURMUR3_C1,
    MURMUR3_C2,
    MURMUR3_FMIX1,
    MURMUR3_FMIX2,
    MURMUR3_H_ADD,
    murmur3_mix_k1,
)

from .common import Pipe, add3_terms, const_mul_terms, mul_depth, set_multiplier_params, term_value
from .lanes import _LaneCore, delay
from .xxhash import HashBeat

__all__ = ["Murmur3Core", "Murmur3Lane", "murmur3_round", "spark_byte_table"]

#: The state round's multiplier (``h * 5 + 0xe6546b64`` in ``murmur3_mix_h1``; the golden model
#: writes it inline), the rotations of ``mix_k1`` / the round, and fmix32's shifts: the
#: structure of MurmurHash3.cpp, checked by the equations against the golden model.
MIX_H1_MUL = 5
ROT_K1, ROT_H1 = 15, 13
FMIX_SHIFTS = (16, 13, 16)


def spark_byte_table() -> list[int]:
    """``mix_k1`` of every byte value sign-extended to 32 bits (a Java ``byte`` widened to
    ``int``), index = the byte: the Spark tail's block values, from the golden model."""
    return [murmur3_mix_k1((b - 256 if b >= 128 else b) & 0xFFFFFFFF) for b in range(256)]


def murmur3_round(h: Value, k: Value) -> Value:
    """``rotl(h ^ k, 13) * 5 + 0xe6546b64`` (mod 2**32) as one carry-save level and one 32-bit
    adder: ``x + (x << 2) + const`` (the terms of the constant multiply) summed by
    :func:`~offload.hw.common.add3_terms`, the xor folded into the carry-save LUTs."""
    x = (Value.cast(h) ^ k).rotate_left(ROT_H1)
    terms = const_mul_terms(x, MIX_H1_MUL, 32, MURMUR3_H_ADD)
    a, b, c = terms  # x, x << 2 and the constant: one carry-save level
    return term_value(add3_terms(a, b, c, 32), 32)


def _mix_k1_trees(p: Pipe, names: list[tuple[str, Value]], drop=()) -> None:
    """``name = mix_k1(x)`` for each ``(name, x)`` of pipe ``p``: two pipelined multiplies;
    ``drop`` leaves at the first stage."""
    for n, x in names:
        p.mul_tree(f"{n}_m", p.wire(x, f"{n}_x"), MURMUR3_C1, 32)
    p.stage(drop=drop)
    p.drain()
    for n, _ in names:
        p.mul_tree(n, p.wire(p[f"{n}_m"].rotate_left(ROT_K1), f"{n}_r"), MURMUR3_C2, 32)
    p.stage(drop=[f"{n}_m" for n, _ in names])
    p.drain()


def _mix_k1_depth(levels: int | str) -> int:
    return mul_depth(32, MURMUR3_C1, 32, levels=levels) + mul_depth(32, MURMUR3_C2, 32, levels=levels)


def _fmix(p: Pipe, length: Value) -> None:
    """``h ^= length``, then fmix32 of field ``h`` (two multiplies + 2 stages)."""
    s0, s1, s2 = FMIX_SHIFTS
    h = p["h"] ^ length
    p.stage(h=h ^ (h >> s0))
    h = p["h"]
    p.mul_step("h", h, MURMUR3_FMIX1, 32, Const(1))
    h = p["h"]
    p.mul_step("h", h ^ (h >> s1), MURMUR3_FMIX2, 32, Const(1))
    h = p["h"]
    p.stage(h=h ^ (h >> s2))


def _fmix_depth(levels: int | str) -> int:
    return 2 + sum(mul_depth(32, c, 32, levels=levels) for c in (MURMUR3_FMIX1, MURMUR3_FMIX2))


def _byte_mask(n: Value) -> Value:
    """64-bit mask of the low ``n`` bytes of a word, ``n`` in 1..8 (3 bits, 0 meaning 8)."""
    return Cat(*[((n == 0) | (n > i)).replicate(8) for i in range(8)])


class Murmur3Core(wiring.Component):
    """MurmurHash3_x86_32 of variable-length records, one 64-bit word per cycle (module
    docstring: ports, structure, reset).

    Latency :attr:`latency` = 1 (input register) + the two ``mix_k1`` multiplies + 1 (seed and
    tail-word select) + 1 (the loop) + 1 (tail select) + 3 (Spark's byte rounds) + fmix32
    cycles from a record's last word; every record takes the same path, so results leave in
    order, one per record. ``adder_levels``, ``multipliers``: as the XXH cores.
    """

    def __init__(self, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        self._MustUse__silence = False
        #: stages in front of the loop's register
        self.FRONT = 1 + _mix_k1_depth(adder_levels) + 1
        self.latency = self.FRONT + 1 + 1 + 3 + _fmix_depth(adder_levels)
        super().__init__(
            {
                "i": In(stream.Signature(HashBeat, always_ready=True)),
                "o": Out(stream.Signature(32, always_ready=True)),
                "seed": In(32),
                "spark_tail": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        b = self.i.payload
        r = b.length[:3]  # bytes in the last word (0: 8)
        last = b.last
        # Only a record's last word can hold partial blocks: full0/full1 say whether its first
        # and second 4-byte blocks are whole (every other word's are).
        fe = Pipe(
            m,
            "mfe",
            levels=self.adder_levels,
            behavioural=self.behavioural,
            valid=self.i.valid,
            first=b.first,
            last=last,
            length=b.length,
            spark=self.spark_tail,
            seed=Mux(b.first, self.seed, 0),
            full0=~last | (~b.empty & ((r == 0) | r[2])),
            full1=~last | (~b.empty & (r == 0)),
            nt=Mux(last & ~b.empty, r[:2], 0),  # trailing bytes after the last whole block
            half=r[2],  # the block that holds them
            d=b.data & Mux(last, _byte_mask(r), Const(-1, 64)),
        )
        fe.stage()
        tb = fe["d"].word_select(fe["half"], 32)
        fe.f.update({f"sb{j}": tb.word_select(j, 8) for j in range(3)})
        _mix_k1_trees(fe, [("k0", fe["d"][:32]), ("k1", fe["d"][32:])], drop=["d"])
        # A first word starts from the seed: xor it into the first block's value here, so the
        # loop reads a register that is 0 on a first word instead of a mux.
        fe.stage(
            drop=["seed", "k0", "half"],
            kk0=fe["k0"] ^ fe["seed"],
            sd=fe["seed"],
            kt=Mux(fe["half"], fe["k1"], fe["k0"]),  # the standard tail's block value
        )
        assert fe.depth == self.FRONT, (fe.depth, self.FRONT)

        # The loop: two rounds per word, the state register cleared after a record's last word.
        h = Signal(32, name="murmur_h")
        r0 = murmur3_round(h, fe["kk0"])
        r1 = murmur3_round(r0, fe["k1"])
        with m.If(fe["valid"] & fe["last"]):
            m.d.sync += h.eq(0)
        with m.Elif(fe["valid"]):
            m.d.sync += h.eq(r1)
        fin = Pipe(
            m,
            "mfin",
            levels=self.adder_levels,
            behavioural=self.behavioural,
            valid=fe["valid"] & fe["last"],
            # The finaliser recomputes the word's two rounds from registered copies of the
            # loop's inputs instead of taking ``r0``/``r1``: the loop's carry chains then drive
            # only ``murmur_h`` and place next to it (in the PYNQ-Z2 engine their fan-out to
            # this pipeline's registers made the loop the critical path).
            hl=h,
            kk0=fe["kk0"],
            k1=fe["k1"],
            sd=fe["sd"],
            **{k: fe[k] for k in ("full0", "full1", "length", "spark", "nt", "kt", "sb0", "sb1", "sb2")},
        )
        # Spark's byte values from the table: read here, registered once (a block RAM's output
        # straight into the round's adder was the core's critical path), used 2-4 stages on.
        rom = Memory(shape=32, depth=256, init=spark_byte_table())
        m.submodules.spark_bytes = rom
        for j in range(3):
            port = rom.read_port(domain="sync")
            m.d.comb += [port.addr.eq(fin.f.pop(f"sb{j}")), port.en.eq(1)]
            fin.at(1, lambda j=j, port=port: fin.f.__setitem__(f"mk{j}", port.data))
        # The first round here (one chain), the second in the next stage, beside the tail's mux.
        fin.stage(
            drop=["hl", "kk0", "sd"],
            r0=murmur3_round(fin["hl"], fin["kk0"]),
            hin=fin["hl"] ^ fin["sd"],  # the state before this word (the seed on a first word)
        )
        std = ~fin["spark"] & (fin["nt"] != 0)
        r1 = murmur3_round(fin["r0"], fin["k1"])
        fin.stage(
            drop=["r0", "k1", "hin", "full0", "full1", "kt"],
            h=Mux(fin["full1"], r1, Mux(fin["full0"], fin["r0"], fin["hin"])) ^ Mux(std, fin["kt"], 0),
        )
        for j in range(3):
            on = fin["spark"] & (fin["nt"] > j)
            fin.stage(
                drop=[f"mk{j}"] + (["spark", "nt"] if j == 2 else []),
                h=Mux(on, murmur3_round(fin["h"], fin[f"mk{j}"]), fin["h"]),
            )
        length = fin.f.pop("length")
        _fmix(fin, length)
        m.d.comb += [self.o.valid.eq(fin["valid"]), self.o.payload.eq(fin["h"])]
        assert fe.depth + fin.depth == self.latency, (fe.depth, fin.depth, self.latency)
        return m


class Murmur3Lane(_LaneCore):
    """MurmurHash3_x86_32 of one 4- or 8-byte key per cycle, padded to ``latency`` cycles.

    Ports as the XXH lanes (:mod:`offload.hw.lanes`): ``i`` In(stream of 64-bit words, always
    ready; a 4-byte key is the low half), ``o`` Out(stream of 32-bit hashes, always ready),
    ``seed`` In(32), ``key8`` In(1) (1: 8-byte keys, 0: 4-byte), both held during a batch (the
    seed is registered: allow 2 cycles after a change). Latency exactly ``latency`` (at least
    :attr:`depth`), throughput one key per cycle. Reset: only the ``valid`` bits. A key is whole
    4-byte blocks, where the standard and Spark tails agree, so there is no ``spark_tail``.
    """

    WIDTH = 32

    @staticmethod
    def _pipeline(m, valid, w, seed, key8, levels, behavioural=False) -> Pipe:
        p = Pipe(m, "m3l", levels=levels, behavioural=behavioural, valid=valid, k8=key8, seed=seed, d=w)
        _mix_k1_trees(p, [("k0", p["d"][:32]), ("k1", p["d"][32:])], drop=["d"])
        p.stage(drop=["k0", "seed"], h=murmur3_round(p["seed"], p["k0"]))
        p.stage(drop=["k1"], h=Mux(p["k8"], murmur3_round(p["h"], p["k1"]), p["h"]))
        k8 = p.f.pop("k8")
        _fmix(p, Mux(k8, 8, 4))
        return p

    def elaborate(self, platform):
        m = Module()
        seed = Signal(32, reset_less=True)
        key8 = Signal(reset_less=True)
        m.d.sync += [seed.eq(self.seed), key8.eq(self.key8)]
        p = self._pipeline(m, self.i.valid, self.i.payload, seed, key8, self.adder_levels, self.behavioural)
        assert p.depth == self.depth
        valid, data = delay(m, "pad", p["valid"], p["h"], self.latency - p.depth)
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(data)]
        return m
