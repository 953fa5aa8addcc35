"""Delta + zigzag + LEB128 encoder, bit-exact with :func:`offload.golden.delta_varint_encode_seq`.

Input: the int64 values of sequences, one per beat (``first`` on a sequence's first value,
``last`` on its last; a 0-value sequence is one beat with ``first``, ``last`` and ``empty``).
Output: the sequence's bytes packed little-endian into full 64-bit words (``header=0``; the last
one zero-padded), then one word with ``header=1`` whose ``data`` is the sequence's byte count
``B``. The engine's output FIFO places that header word *before* the sequence's data words
(it reserves the slot when the first data word arrives), which is the wire format.

Stage A computes ``z = zigzag(v - prev)``; the packer turns ``z`` into its LEB128 bytes (all 10
possible bytes at once: byte ``i`` is bits ``7i..7i+6`` with 0x80 when anything is left above),
appends them at the fill level of a 24-byte buffer and emits one word per cycle when 8 bytes are
ready. A value (<= 10 bytes) is accepted when the buffer, after this cycle's emitted word, has
room for 10 more bytes; so values up to 6 bytes (|delta| < 2**41) flow at one per cycle, and at
the end of each sequence the buffer is flushed (one cycle per remaining word) and the header
emitted (one cycle).

Ports: ``i`` In(stream of :data:`SeqBeat`, with ready), ``o`` Out(stream of :data:`OutWord`,
always ready: the consumer must take every word), ``busy`` Out(1) (a value or a full word still to come out).
Latency: first data word 2 cycles after the value that fills it; header 1 cycle after the flush.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SeqBeat", "OutWord", "DeltaVarintEncoder"]

SeqBeat = data.StructLayout({"data": 64, "first": 1, "last": 1, "empty": 1})
OutWord = data.StructLayout({"data": 64, "header": 1})


class DeltaVarintEncoder(wiring.Component):
    """See the module docstring. Buffer: 24 bytes (``BUF_BYTES``)."""

    BUF_BYTES = 24

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(SeqBeat)),
            "o": Out(stream.Signature(OutWord, always_ready=True)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        b = self.i.payload
        prev = Signal(64)
        a_valid = Signal()
        a_z = Signal(64)
        a_last = Signal()
        a_empty = Signal()
        a_take = Signal()
        m.d.comb += self.i.ready.eq(~a_valid | a_take)

        # Stage A: delta and zigzag (two's complement wrap: 64-bit subtract, arithmetic shift).
        d = (b.data - Mux(b.first, 0, prev))[:64]
        z = Cat(Const(0, 1), d[:63]) ^ d[63].replicate(64)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [a_valid.eq(1), a_z.eq(z), a_last.eq(b.last), a_empty.eq(b.empty)]
            with m.If(~b.empty):
                m.d.sync += prev.eq(b.data)
        with m.Elif(a_take):
            m.d.sync += a_valid.eq(0)

        # Packer.
        more = [Const(1, 1)] + [a_z[7 * i:] != 0 for i in range(1, 10)] + [Const(0, 1)]
        nbytes = Signal(4)
        m.d.comb += nbytes.eq(sum(more[1:10], Const(1, 4)))
        groups = [a_z[7 * i:7 * i + 7] for i in range(10)]
        vb = Cat(*[Cat(groups[i], Const(0, 7 - len(groups[i])), more[i + 1]) for i in range(10)])

        buf = Signal(8 * self.BUF_BYTES)
        cnt = Signal(5)                 # bytes in buf
        total = Signal(32)              # bytes of the current sequence so far
        flushing = Signal()
        emit = Signal()
        header_now = Signal()
        c_after = Signal(5)
        m.d.comb += [
            emit.eq((cnt >= 8) | (flushing & (cnt != 0))),
            header_now.eq(flushing & (cnt == 0)),
            c_after.eq(Mux(emit, Mux(cnt >= 8, cnt - 8, 0), cnt)),
            a_take.eq(a_valid & ~flushing & (c_after <= self.BUF_BYTES - 10)),
            self.o.valid.eq(emit | header_now),
            self.o.payload.data.eq(Mux(header_now, total, buf[:64])),
            self.o.payload.header.eq(header_now),
            self.busy.eq(a_valid | flushing | (cnt >= 8)),   # more words will come
        ]
        buf_after = Mux(emit, buf >> 64, buf)
        with m.If(a_take & ~a_empty):
            m.d.sync += [
                buf.eq((buf_after | (vb << Cat(Const(0, 3), c_after)))[:8 * self.BUF_BYTES]),
                cnt.eq(c_after + nbytes),
                total.eq(total + nbytes),
            ]
        with m.Else():
            m.d.sync += [buf.eq(buf_after), cnt.eq(c_after)]
        with m.If(a_take & (a_last | a_empty)):
            m.d.sync += flushing.eq(1)
        with m.If(header_now):
            m.d.sync += [flushing.eq(0), total.eq(0)]
        return m
