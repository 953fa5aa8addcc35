"""Bucketize core, bit-exact with :func:`offload.golden.bucketize`.

Values and boundaries are mapped to *ordered 64-bit keys* so that one unsigned comparator serves
every dtype: int32 (sign-extended) and int64 flip the sign bit; float32/float64 map ``-0.0`` to
``+0.0`` then flip all bits of negatives and set the sign bit of positives (the IEEE order of
non-NaN values becomes unsigned integer order; infinities fall out right). A NaN ``x`` goes to
``num_boundaries`` (SPEC.md).

The count is found by a pipelined binary search over the boundary table (a memory written
through the engine's registers): ``log2(table_depth) + 1`` steps, each a synchronous memory
read and a compare, every step with its own read port so one value enters per cycle. Entries at
index ``>= num_boundaries`` act as +infinity.

Ports: ``i`` In(stream of 64-bit raw values, always ready), ``o`` Out(stream of 32-bit counts,
always ready), ``dtype`` In(2) (0 int32, 1 int64, 2 float32, 3 float64), ``right`` In(1)
(1: count ``b <= x``, 0: count ``b < x``), ``num_boundaries`` In(13), ``table_addr``,
``table_data`` In(64), ``table_we`` (one write per cycle). Latency :attr:`latency`, throughput
one value per cycle. Parameters are held stable during a batch.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import Pipe, check_pow2

__all__ = ["Bucketize", "order_key"]

DTYPE_INT32, DTYPE_INT64, DTYPE_FLOAT32, DTYPE_FLOAT64 = 0, 1, 2, 3


def order_key(raw, dtype):
    """(ordered unsigned 64-bit key, is-NaN) of a raw 64-bit pattern of ``dtype``."""
    s32 = raw[:32]
    i32 = Cat(s32, s32[31].replicate(31), ~s32[31])
    i64 = Cat(raw[:63], ~raw[63])
    b32 = Mux(s32 == 0x8000_0000, 0, s32)                       # -0.0 -> +0.0
    f32 = Mux(b32[31], ~b32, b32 | 0x8000_0000)[:32]
    b64 = Mux(raw == 0x8000_0000_0000_0000, 0, raw)
    f64 = Mux(b64[63], ~b64, b64 | 0x8000_0000_0000_0000)[:64]
    nan32 = (s32[23:31] == 0xFF) & (s32[:23] != 0)
    nan64 = (raw[52:63] == 0x7FF) & (raw[:52] != 0)
    key = Mux(dtype == DTYPE_INT32, i32,
              Mux(dtype == DTYPE_INT64, i64,
                  Mux(dtype == DTYPE_FLOAT32, Cat(f32, Const(0, 32)), f64)))
    nan = Mux(dtype == DTYPE_FLOAT32, nan32, Mux(dtype == DTYPE_FLOAT64, nan64, 0))
    return key, nan


class Bucketize(wiring.Component):
    """See the module docstring. ``table_depth``: a power of two between 1 and 4096."""

    def __init__(self, table_depth: int = 256):
        self._MustUse__silence = True      # no UnusedElaboratable warning if rejected
        self.table_depth = check_pow2("table_depth", table_depth, 1, 4096)
        self._MustUse__silence = False
        self.abits = max(1, (table_depth - 1).bit_length())
        self.steps = table_depth.bit_length()           # log2(depth) + 1 lookups
        self.latency = 1 + 2 * self.steps + 1
        super().__init__({
            "i": In(stream.Signature(64, always_ready=True)),
            "o": Out(stream.Signature(32, always_ready=True)),
            "dtype": In(2),
            "right": In(1),
            "num_boundaries": In(13),
            "table_addr": In(12),
            "table_data": In(64),
            "table_we": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        D = self.table_depth
        m.submodules.table = table = Memory(shape=64, depth=D, init=[])
        wp = table.write_port()
        m.d.comb += [wp.addr.eq(self.table_addr), wp.data.eq(self.table_data),
                     wp.en.eq(self.table_we)]
        nb = Signal(13)
        dtype = Signal(2)
        right = Signal()
        m.d.sync += [nb.eq(self.num_boundaries), dtype.eq(self.dtype), right.eq(self.right)]
        kx, nan = order_key(self.i.payload, self.dtype)
        pw = self.abits + 2
        p = Pipe(m, "bz", valid=self.i.valid, kx=kx, nan=nan, pos=Const(0, pw))
        p.stage()
        # Binary lifting: after the steps D/2..1, pos = min(count, D-1); one more lookup at pos
        # adds the last boundary when all D are below x.
        steps = [D >> k for k in range(1, self.steps)] + [1]
        for n, step in enumerate(steps):
            final = n == len(steps) - 1
            idx = (p["pos"] + (0 if final else step - 1))[:pw]
            rp = table.read_port(domain="sync")
            m.d.comb += rp.addr.eq(idx)
            p.stage(idx=idx)                                    # rp.data belongs to this stage
            kb, _ = order_key(rp.data, dtype)
            pred = (p["idx"] < nb) & Mux(right, kb <= p["kx"], kb < p["kx"])
            p.stage(drop=["idx"], pos=(p["pos"] + Mux(pred, step, 0))[:pw])
        p.stage(drop=["kx", "nan", "pos"], res=Mux(p["nan"], nb, p["pos"]))
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["res"])]
        assert p.depth == self.latency
        return m
