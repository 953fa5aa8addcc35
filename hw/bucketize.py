"""Bucketize core, bit-exact with :func:`offload.golden.bucketize`.

Values and boundaries are mapped to *ordered 64-bit keys* so that one unsigned comparator serves
every dtype: int32 (sign-extended) and int64 flip the sign bit; float32/float64 map ``-0.0`` to
``+0.0`` then flip all bits of negatives and set the sign bit of positives (the IEEE order of
non-NaN values becomes unsigned integer order; infinities fall out right). A NaN ``x`` goes to
``num_boundaries`` (docs/operators.md).

The count is found by a pipelined binary search over the boundary table (a memory written
through the engine's registers): ``log2(table_depth) + 1`` steps, every step with its own read
port so one value enters per cycle. Entries at index ``>= num_boundaries`` act as +infinity.
Each step is three register stages, each with at most one carry chain (ECP5 >= 110 MHz):
M, the synchronous read, addressed straight from the registered position (the index is
``pos | (step - 1)``: no adder); R, the boundary registered as read (block RAM clock-to-out is
slow); C, the boundary's key (:func:`boundary_key`, an XOR mask: the ``-0.0`` rule is applied
to x instead, see :func:`x_key`) and a compare split into three parallel 33-bit chains.
In front of the steps, x is registered once more inside the core (stage I: its wide compares
then start at a register placed with them), and its wide compares take two stages: F registers
the parts (:func:`key_parts`), the first step's M the flags (:func:`key_flags`). Latency
``3 * (log2(table_depth) + 1) + 3`` cycles (:attr:`latency`: 18 for depth 16, 30 for 256).
Reset: only the ``valid`` bits matter.

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

from .common import MULTIPLIERS, Pipe, check_choice, check_pow2, keep_copies

__all__ = ["Bucketize", "order_key", "boundary_key", "x_key"]

DTYPE_INT32, DTYPE_INT64, DTYPE_FLOAT32, DTYPE_FLOAT64 = 0, 1, 2, 3


def key_parts(raw) -> dict:
    """The all-zero and all-one tests of x's bit fields that :func:`key_flags` combines, each
    over at most 16 bits (two LUT levels): the core registers them a stage ahead of the flags.
    Computed in one stage, the flags' compares shared their LUTs (NaN's mantissa test is a part
    of the zero tests), and the chain from x's register to the ``-0.0`` flag was seven LUTs,
    spread over tens of rows: the engine's critical path at two placements (10.75 and 10.26 ns,
    8.54 and 8.04 of them routing, nextpnr seeds 1 and 3 of round 16)."""
    return {
        "z0": raw[0:16] == 0,
        "z1": raw[16:23] == 0,
        "z2": raw[23:31] == 0,
        "z3": raw[31:47] == 0,
        "z4": raw[47:52] == 0,
        "z5": raw[52:63] == 0,
        "ones32": raw[23:31] == 0xFF,  # float32's exponent
        "ones64": raw[52:63] == 0x7FF,  # float64's exponent
    }


def key_flags(raw, parts=None) -> dict:
    """The wide compares :func:`order_key` and :func:`x_key` need, from :func:`key_parts` of
    ``raw`` (``parts``, registered; computed here when not given): from registered parts, at
    most two LUT levels. The core registers them a stage ahead of the key, so no path has both.
    NaN's too: with the dtype's select behind them in one stage, the input register to the NaN
    flag was seven LUTs, the engine's critical path at one placement (10.43 ns, nextpnr seed
    2). ``-0.0`` is a zero flag and the sign bit (:func:`order_key`)."""
    q = key_parts(raw) if parts is None else parts
    low23 = q["z0"] & q["z1"]  # float32's mantissa is 0
    zero32 = low23 & q["z2"]
    low52 = zero32 & q["z3"] & q["z4"]  # float64's mantissa is 0
    return {
        "zero32": zero32,
        "zero64": low52 & q["z5"],
        "nan32": q["ones32"] & ~low23,
        "nan64": q["ones64"] & ~low52,
    }


def order_key(raw, dtype, flags=None):
    """(ordered unsigned 64-bit key, is-NaN) of a raw 64-bit pattern of ``dtype`` (``flags``:
    :func:`key_flags` of ``raw``, registered; computed here when not given)."""
    f = key_flags(raw) if flags is None else flags
    s32 = raw[:32]
    i32 = Cat(s32, s32[31].replicate(31), ~s32[31])
    i64 = Cat(raw[:63], ~raw[63])
    # -0.0 -> +0.0: the sign bit cleared when the other bits are 0.
    b32 = Cat(s32[:31], s32[31] & ~f["zero32"])
    f32 = Mux(b32[31], ~b32, b32 | 0x8000_0000)[:32]
    b64 = Cat(raw[:63], raw[63] & ~f["zero64"])
    f64 = Mux(b64[63], ~b64, b64 | 0x8000_0000_0000_0000)[:64]
    key = Mux(
        dtype == DTYPE_INT32,
        i32,
        Mux(dtype == DTYPE_INT64, i64, Mux(dtype == DTYPE_FLOAT32, Cat(f32, Const(0, 32)), f64)),
    )
    nan = Mux(dtype == DTYPE_FLOAT32, f["nan32"], Mux(dtype == DTYPE_FLOAT64, f["nan64"], 0))
    return key, nan


def boundary_key(raw, dtype):
    """The ordered key of a boundary WITHOUT the ``-0.0 -> +0.0`` step (so it is one XOR with a
    mask chosen by dtype and sign: two LUT levels). A ``-0.0`` boundary then has the key just
    below ``+0.0``'s, which no x has (see :func:`x_key`)."""
    s32, s64 = raw[31], raw[63]
    i32 = Cat(raw[:31], s32.replicate(32), ~s32)
    i64 = Cat(raw[:63], ~s64)
    f32 = Cat(raw[:31] ^ s32.replicate(31), ~s32, Const(0, 32))
    f64 = Cat(raw[:63] ^ s64.replicate(63), ~s64)
    return Mux(
        dtype == DTYPE_INT32, i32, Mux(dtype == DTYPE_INT64, i64, Mux(dtype == DTYPE_FLOAT32, f32, f64))
    )


def _boundary_key_sim(raw, dtype):
    """:func:`boundary_key` for the behavioural flavour: the same key as a 64-bit value XOR a
    mask (no replicated sign bits, whose shared terms a simulator computes every cycle)."""
    s32, s64 = raw[31], raw[63]
    top = Const(1 << 63, 64)
    value = Mux(dtype[0], raw, Cat(raw[:32], Mux(~dtype[1] & s32, 0xFFFF_FFFF, 0)))
    flip_f = Mux(dtype[0], Mux(s64, (1 << 63) - 1, 0) ^ top, Mux(s32, 0x7FFF_FFFF, 0) ^ 0x8000_0000)
    return value ^ Mux(dtype[1], flip_f, top)


def x_key(raw, dtype, right, flags=None):
    """(key, is-NaN) of the value ``x``: :func:`order_key`, except that a float ``x == ±0.0``
    gets the key of ``+0.0`` when ``right`` and the key just below it (that of an unmapped
    ``-0.0``) when not. Against :func:`boundary_key` keys this gives exactly ``b <= x`` /
    ``b < x`` with ``-0.0 == 0.0``: a ``-0.0`` boundary's key is that just-below key, a
    ``+0.0`` boundary's is ``+0.0``'s, and no other value lies between them."""
    f = key_flags(raw) if flags is None else flags
    key, nan = order_key(raw, dtype, f)
    zero32 = (dtype == DTYPE_FLOAT32) & f["zero32"]
    zero64 = (dtype == DTYPE_FLOAT64) & f["zero64"]
    below = Mux(dtype == DTYPE_FLOAT32, 0x7FFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF)
    return Mux((zero32 | zero64) & ~right, below, key), nan


def _carry_out(a, b_inv, cin):
    """Carry out of ``a + b_inv + cin`` (``cin`` one bit) as ONE adder: the carry-in is folded
    into an extra low bit (``cin + 1`` carries exactly ``cin``)."""
    w = len(a)
    return (Cat(cin, a) + Cat(Const(1, 1), b_inv))[w + 1]


def _ge_halves(kx, kb, right):
    """``kb <= kx`` if ``right`` else ``kb < kx`` (unsigned 64-bit), from three parallel 33-bit
    carry chains: hi(kx) > hi(kb), hi(kx) >= hi(kb), and the low halves' compare."""
    hi_gt = _carry_out(kx[32:], ~kb[32:], Const(0, 1))
    hi_ge = _carry_out(kx[32:], ~kb[32:], Const(1, 1))
    lo = _carry_out(kx[:32], ~kb[:32], right)
    return hi_gt | (hi_ge & lo)


class Bucketize(wiring.Component):
    """See the module docstring. ``table_depth``: a power of two between 1 and 4096.

    ``multipliers="behavioural"`` (simulation flavour, as the hash cores'): stage R
    registers the boundary's key instead of the raw boundary and stage C compares with one
    native ``<=``/``<``: the same counts in the same cycles (``dtype`` is held during a batch),
    and a Verilator model computes nothing for the core while its enable is low (the key and the
    split compares were shared terms computed every cycle, outside the enable)."""

    def __init__(self, table_depth: int = 256, multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        self.table_depth = check_pow2("table_depth", table_depth, 1, 4096)
        self.behavioural = check_choice("multipliers", multipliers, MULTIPLIERS) == "behavioural"
        self._MustUse__silence = False
        self.abits = max(1, (table_depth - 1).bit_length())
        self.steps = table_depth.bit_length()  # log2(depth) + 1 lookups
        self.latency = 3 * self.steps + 3
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "o": Out(stream.Signature(32, always_ready=True)),
                "dtype": In(2),
                "right": In(1),
                "num_boundaries": In(13),
                "table_addr": In(12),
                "table_data": In(64),
                "table_we": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        D = self.table_depth
        m.submodules.table = table = Memory(shape=64, depth=D, init=[])
        wp = table.write_port()
        m.d.comb += [wp.addr.eq(self.table_addr), wp.data.eq(self.table_data), wp.en.eq(self.table_we)]
        nb = Signal(13, reset_less=True)  # copies of the ports, reloaded every cycle
        m.d.sync += nb.eq(self.num_boundaries)
        # x's key is needed at the first step's compare: stage F registers x with the parts of
        # its wide compares, the first step's M their flags (NaN's too), its R the key and NaN
        # (ECP5: x_key in one stage was the engine's critical path, seven LUT levels at 82.7
        # MHz). The compares start from a copy of x registered here (stage I), not from the
        # core's input register:
        # placed by the lanes' input mux, that register was 60 rows from the compares'
        # registers, the engine's critical path at two placements (10.55 ns, 8.33 of it
        # routing, nextpnr seed 2 of round 14; 9.95 ns, seed 3 of round 13).
        pw = self.abits + 1
        # Binary lifting: after the steps D/2..1, pos = min(count, D-1); one more lookup at pos
        # adds the last boundary when all D are below x. Before the step of size s, pos is a
        # multiple of 2s, so the index pos + s - 1 is pos | (s - 1) and pos + s is pos | s:
        # the address logic is wiring, no adders.
        steps = [D >> k for k in range(1, self.steps)] + [1]
        offs = [s - 1 for s in steps[:-1]] + [0]  # index = pos | offs[n]
        # A copy of dtype and right per step: one register drove every step's key masks and
        # compares, and on the ECP5 its net (7.5 ns of routing) was the engine's critical path.
        dtypes = keep_copies(m, "bz_dtype", self.dtype, len(steps))
        rights = keep_copies(m, "bz_right", self.right, len(steps))
        p = Pipe(m, "bz", valid=self.i.valid, raw=self.i.payload, pos=Const(0, pw))
        p.stage()
        parts = key_parts(p["raw"])
        p.stage(**parts)
        flags = key_flags(p["raw"], {k: p[k] for k in parts})
        for n, step in enumerate(steps):
            final = n == len(steps) - 1
            # Stage M: the lookup's read, addressed straight from registers (memory address
            # inputs are far from the logic; nothing else is in front of them).
            idx = p["pos"] | offs[n]
            rp = table.read_port(domain="sync")
            m.d.comb += rp.addr.eq(idx[: self.abits])
            p.stage(inb=idx < nb, **(dict(flags, drop=list(parts)) if n == 0 else {}))
            # Stage R: the boundary as read (a DP16KD's clock-to-out is ~5 ns); in the first
            # step also x's key, from the registered x and compares.
            first: dict = {}
            dtype, right = dtypes[n], rights[n]
            if n == 0:
                first["kx"], first["nan"] = x_key(p["raw"], dtype, right, {k: p[k] for k in flags})
                first["drop"] = ["raw", *flags]
            if self.behavioural:
                p.stage(kraw=_boundary_key_sim(rp.data, dtype), **first)
                ge = Mux(right, p["kraw"] <= p["kx"], p["kraw"] < p["kx"])
            else:
                p.stage(kraw=rp.data, **first)
                # Stage C: key (two LUT levels) and compare: kx + ~kb + right = kx - kb - (1 -
                # right) carries out iff (kb <= kx) when right, else (kb < kx); split in 32-bit
                # halves computed in parallel (three 33-bit chains instead of one 65-bit chain).
                ge = _ge_halves(p["kx"], boundary_key(p["kraw"], dtype), right)
            pred = p["inb"] & ge
            if final:
                # Only reached with pos == D - 1 (all earlier lookups below x): count is D.
                p.stage(drop=["kraw", "inb"], fin=pred)
            else:
                p.stage(drop=["kraw", "inb"], pos=p["pos"] | Mux(pred, step, 0))
        p.stage(drop=["kx", "nan", "pos", "fin"], res=Mux(p["nan"], nb, Mux(p["fin"], D, p["pos"])))
        m.d.comb += [self.o.valid.eq(p["valid"]), self.o.payload.eq(p["res"])]
        assert p.depth == self.latency
        return m
