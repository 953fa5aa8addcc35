"""Delta + zigzag + LEB128 encoder, bit-exact with :func:`offload.golden.delta_varint_encode_seq`.

Input: the int64 values of sequences, one per beat (``first`` on a sequence's first value,
``last`` on its last; a 0-value sequence is one beat with ``first``, ``last`` and ``empty``).
Output: the sequence's bytes packed little-endian into full 64-bit words (``header=0``; the last
one zero-padded), then one word with ``header=1`` whose ``data`` is the sequence's byte count
``B``. The engine's output FIFO places that header word *before* the sequence's data words
(it reserves the slot when the first data word arrives), which is the wire format.

Stage A computes ``z = zigzag(v - prev)``; stage B turns ``z`` into its LEB128 bytes (all 10
possible bytes at once: byte ``i`` is bits ``7i..7i+6`` with 0x80 when anything is left above)
and their count; the packer appends them at the fill level of a 24-byte buffer and emits one
word per cycle when 8 bytes are ready. A value (<= 10 bytes) is accepted when the buffer, after
this cycle's emitted word, has room for 10 more bytes; so values up to 6 bytes (|delta| < 2**41)
flow at one per cycle, and at the end of each sequence the buffer is flushed (one cycle per
remaining word) and the header emitted (one cycle).

Ports: ``i`` In(stream of :data:`SeqBeat`, with ready), ``o`` Out(stream of :data:`OutWord`,
always ready: the consumer must take every word), ``busy`` Out(1) (a value or a full word still to come out).
Latency: first data word 3 cycles after the value that fills it (stage A: delta/zigzag,
stage B: LEB128 bytes and count, then the buffer register); header 1 cycle after the flush.
Reset: ``valid``/count/flush state only. Timing: stage B keeps the wide "anything left above
byte i" ORs out of the packer, whose byte shifter is steered by a register (``sh``) and whose
emit/take decisions read the count's compares as registers (``cnt_ge8``, ``cnt_nz``,
``cnt_room``), not the count.
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
        super().__init__(
            {
                "i": In(stream.Signature(SeqBeat)),
                "o": Out(stream.Signature(OutWord, always_ready=True)),
                "busy": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        b = self.i.payload
        prev = Signal(64)
        a_valid, a_z, a_last, a_empty = Signal(), Signal(64), Signal(), Signal()
        b_valid, b_last, b_empty = Signal(), Signal(), Signal()
        b_vb = Signal(80)  # the value's LEB128 bytes (10 bytes, zero above)
        b_nbytes = Signal(4)
        a_adv = Signal()  # stage A moves into stage B this cycle
        b_take = Signal()  # the packer takes stage B's value this cycle
        m.d.comb += [
            a_adv.eq(a_valid & (~b_valid | b_take)),
            self.i.ready.eq(~a_valid | a_adv),
        ]

        # Stage A: delta and zigzag (two's complement wrap: 64-bit subtract, arithmetic shift).
        d = (b.data - Mux(b.first, 0, prev))[:64]
        z = Cat(Const(0, 1), d[:63]) ^ d[63].replicate(64)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [a_valid.eq(1), a_z.eq(z), a_last.eq(b.last), a_empty.eq(b.empty)]
            with m.If(~b.empty):
                m.d.sync += prev.eq(b.data)
        with m.Elif(a_adv):
            m.d.sync += a_valid.eq(0)

        # Stage B: LEB128 bytes and their count, registered so the packer's count/shift logic
        # starts from registers (the wide "anything left above" ORs stay out of the packer).
        more = [Const(1, 1)] + [a_z[7 * i :] != 0 for i in range(1, 10)] + [Const(0, 1)]
        groups = [a_z[7 * i : 7 * i + 7] for i in range(10)]
        vb = Cat(*[Cat(groups[i], Const(0, 7 - len(groups[i])), more[i + 1]) for i in range(10)])
        with m.If(a_adv):
            m.d.sync += [
                b_valid.eq(1),
                b_vb.eq(vb),
                b_nbytes.eq(sum(more[1:10], Const(1, 4))),
                b_last.eq(a_last),
                b_empty.eq(a_empty),
            ]
        with m.Elif(b_take):
            m.d.sync += b_valid.eq(0)

        # Packer.
        buf = Signal(8 * self.BUF_BYTES)
        cnt = Signal(5)  # bytes in buf
        sh = Signal(4)  # where a value taken now goes: cnt, minus 8 if cnt >= 8
        # cnt's compares, registered with it (from c_next): emit and take, which steer all of
        # buf, are then one LUT from registers instead of a 5-bit compare and its carry away.
        cnt_ge8 = Signal()  # cnt >= 8: a full word to emit
        cnt_nz = Signal()  # cnt != 0
        cnt_room = Signal(init=1)  # cnt <= BUF_BYTES - 2 (see b_take)
        total = Signal(32)  # bytes of the current sequence so far
        flushing = Signal()
        emit = Signal()
        header_now = Signal()
        c_after = Signal(5)
        c_next = Signal(5)
        m.d.comb += [
            emit.eq(cnt_ge8 | (flushing & cnt_nz)),
            header_now.eq(flushing & ~cnt_nz),
            c_after.eq(Mux(emit, Mux(cnt_ge8, cnt - 8, 0), cnt)),
            # A value is taken when the buffer, after this cycle's word, has room for 10 more
            # bytes: c_after <= BUF_BYTES - 10. Not flushing, so emit == (cnt >= 8) and that is
            # cnt <= BUF_BYTES - 2 (a compare on a register, not on c_after).
            b_take.eq(b_valid & ~flushing & cnt_room),
            self.o.valid.eq(emit | header_now),
            self.o.payload.data.eq(Mux(header_now, total, buf[:64])),
            self.o.payload.header.eq(header_now),
            self.busy.eq(a_valid | b_valid | flushing | cnt_ge8),  # more words will come
        ]
        buf_after = Mux(emit, buf >> 64, buf)
        with m.If(b_take & ~b_empty):
            # sh == c_after here (taking implies not flushing); it is a register, so the byte
            # shifter's select lines do not wait for the count logic.
            m.d.sync += [
                buf.eq((buf_after | (b_vb << Cat(Const(0, 3), sh)))[: 8 * self.BUF_BYTES]),
                total.eq(total + b_nbytes),
            ]
            m.d.comb += c_next.eq(c_after + b_nbytes)
        with m.Else():
            m.d.sync += buf.eq(buf_after)
            m.d.comb += c_next.eq(c_after)
        m.d.sync += [
            cnt.eq(c_next),
            sh.eq(Mux(c_next >= 8, c_next - 8, c_next)),
            cnt_ge8.eq(c_next >= 8),
            cnt_nz.eq(c_next != 0),
            cnt_room.eq(c_next <= self.BUF_BYTES - 2),
        ]
        with m.If(b_take & (b_last | b_empty)):
            m.d.sync += flushing.eq(1)
        with m.If(header_now):
            m.d.sync += [flushing.eq(0), total.eq(0)]
        return m
