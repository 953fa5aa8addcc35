"""Post-processing cores on a stream of XXH64 values: ``hash_bucket`` (mod / fastrange) and ``fid``.

All are flow-through pipelines (input always ready, output must always be taken), one value per
cycle, bit-exact with :func:`offload.golden.hash_bucket` and :func:`offload.golden.fid`.
Parameters (``num_buckets``, ``slot``) are ports held stable during a batch.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from offload.golden import FID_LAYOUT

from .common import Pipe, check_choice

__all__ = ["ModPipe", "FastRange", "FidCore"]


class ModPipe(wiring.Component):
    """``h % num_buckets`` for ANY 64-bit ``num_buckets >= 1``, exact, one value per cycle.

    A restoring division pipeline that keeps only the remainder: ``bits_per_stage`` quotient
    bits are resolved per register stage (each is one 65-bit compare/subtract), so there is no
    divider that stalls per record and no reciprocal to precompute. Latency
    ``64 // bits_per_stage + 1`` cycles. ``num_buckets == 0`` gives ``h`` (the engine rejects
    it with BAD_PARAM before a batch starts).

    Ports: ``i`` In(stream of 64-bit values, always ready), ``o`` Out(stream of 64-bit
    remainders, always ready), ``num_buckets`` In(64).
    """

    def __init__(self, bits_per_stage: int = 1):
        self._MustUse__silence = True      # no UnusedElaboratable warning if rejected
        self.bits_per_stage = check_choice("bits_per_stage", bits_per_stage, (1, 2, 4))
        self._MustUse__silence = False
        self.latency = 64 // bits_per_stage + 1
        super().__init__({
            "i": In(stream.Signature(64, always_ready=True)),
            "o": Out(stream.Signature(64, always_ready=True)),
            "num_buckets": In(64),
        })

    def elaborate(self, platform):
        m = Module()
        n = Signal(64)
        m.d.sync += n.eq(self.num_buckets)    # registered: fan-out to 64 comparators
        p = Pipe(m, "mod", valid=self.i.valid, h=self.i.payload, r=Const(0, 64))
        for s in range(64 // self.bits_per_stage):
            r, h = p["r"], p["h"]
            for _ in range(self.bits_per_stage):
                # r2 = (r << 1) | next bit of h is 65 bits; keep it as its low 64 bits plus the
                # carry r[63] (r2 >= n iff r[63] or low >= n, and r2 - n < n fits 64 bits).
                # Same logic, but no 65-bit operands: simulators evaluate 64-bit words natively.
                lo = Cat(h[63], r[:63])
                r = Mux(r[63] | (lo >= n), (lo - n)[:64], lo)  # r < n always
                h = Cat(Const(0, 1), h[:63])
            p.stage(r=r, h=h)
        p.stage(drop=["h"])
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["r"])]
        assert p.depth == self.latency
        return m


class FastRange(wiring.Component):
    """``(h * num_buckets) >> 64`` (Lemire's fastrange): the high half of a 64x64 product, built
    from four registered 32x32 partial products. Latency 3 cycles, one value per cycle.

    Ports: ``i``, ``o`` as :class:`ModPipe`, ``num_buckets`` In(64).
    """

    latency = 3

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(64, always_ready=True)),
            "o": Out(stream.Signature(64, always_ready=True)),
            "num_buckets": In(64),
        })

    def elaborate(self, platform):
        m = Module()
        n = Signal(64)
        m.d.sync += n.eq(self.num_buckets)
        h = self.i.payload
        p = Pipe(m, "fr", valid=self.i.valid,
                 ll=h[:32] * n[:32], lh=h[:32] * n[32:], hl=h[32:] * n[:32], hh=h[32:] * n[32:])
        p.stage()
        mid = p["lh"] + p["hl"] + p["ll"][32:]                  # 66 bits, weight 2**32
        p.stage(drop=["ll", "lh", "hl"], hi=(p["hh"] + (mid >> 32))[:64])
        p.stage(drop=["hh"])
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["hi"])]
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
        super().__init__({
            "i": In(stream.Signature(64, always_ready=True)),
            "o": Out(stream.Signature(64, always_ready=True)),
            "slot": In(16),
            "version": In(2),
        })

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
