"""Run the offload engine in the Amaranth simulator through its AXI-Lite and AXI-Stream ports.

:func:`run_batches` is the engine as a plain Python function: register writes, ``START``, the
input words (with optional random ``tvalid`` gaps), the output words (with optional random
``tready`` gaps) up to and including the trailer. Used by ``tests/test_hw_engine.py`` and
``tests/test_hw_engine_lanes.py``.

For an engine with ``lanes = N > 1`` the input words are sent N per beat (the last beat of a
batch, or a beat ending at a word with an explicit ``tlast``, is zero-padded with ``tkeep``
clear), unless the batch gives its ``beats`` explicitly; the output beats are recorded raw
(:attr:`BatchResult.beats`) and unpacked into the words whose ``tkeep`` bits are set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from amaranth.sim import Simulator

from .engine import REG, OffloadEngine
from .simutil import CLOCK_PERIOD

__all__ = [
    "Batch",
    "BatchResult",
    "run_batches",
    "axil_write",
    "axil_read",
    "words_of",
    "pack_var",
    "pack_seq",
    "unpack_seq_output",
    "trailer_fields",
    "beats_of",
]


@dataclass
class Batch:
    regs: dict  # register name -> 32-bit value (written in this order)
    words: list  # input words; tlast on the last unless ``tlast`` says
    tlast: list | None = None  # explicit per-word tlast flags
    tkeep: list | None = None  # explicit per-word tkeep (8 bits per word)
    table: list | None = None  # 64-bit boundary patterns written before START
    start: bool = True  # False: send the words without START (engine idle)
    soft_reset_after: int | None = None  # SOFT_RESET after this many input beats
    # with soft_reset_after: START again at once (the parameter registers keep the batch) and
    # send every beat again, as a host retrying an aborted batch does
    restart: bool = False
    beats: list | None = None  # explicit (tdata, tkeep, tlast) beats (``words`` unused)
    valid_prob: float | None = None  # per-batch overrides of run_batches' probabilities
    ready_prob: float | None = None
    timeout: int | None = None  # per-batch override of run_batches' timeout


@dataclass
class BatchResult:
    out: list = field(default_factory=list)  # output words (the last is the trailer)
    last: list = field(default_factory=list)  # tlast of each output word
    regs: dict = field(default_factory=dict)  # STATUS, ERR, DONE_COUNT, CYCLES after
    accepted: int = 0  # input beats accepted
    words_in: int = 0  # input words carried by the accepted beats
    in_cycles: int = 0  # cycles from first to last accepted beat
    timed_out: bool = False
    beats: list = field(default_factory=list)  # raw output beats (tdata, tkeep, tlast)


def beats_of(b: Batch, lanes: int) -> list[tuple[int, int, int]]:
    """The (tdata, tkeep, tlast) beats of a batch on a ``lanes``-word bus."""
    if b.beats is not None:
        return list(b.beats)
    n = len(b.words)
    tl = b.tlast if b.tlast is not None else [int(i == n - 1) for i in range(n)]
    tk = b.tkeep if b.tkeep is not None else [0xFF] * n
    out, cur = [], []
    for i in range(n):
        cur.append(i)
        if len(cur) == lanes or tl[i] or i == n - 1:
            data = sum(b.words[k] << (64 * j) for j, k in enumerate(cur))
            keep = sum(tk[k] << (8 * j) for j, k in enumerate(cur))
            out.append((data, keep, tl[cur[-1]]))
            cur = []
    return out


def _beat_words(keep: int, lanes: int) -> int:
    """Words carried by an input beat: up to the highest word with a tkeep bit set (>= 1)."""
    return max([j + 1 for j in range(lanes) if (keep >> (8 * j)) & 0xFF] + [1])


async def axil_write(ctx, dut, addr: int, value: int) -> None:
    ctx.set(dut.s_axi_awaddr, addr)
    ctx.set(dut.s_axi_wdata, value & 0xFFFF_FFFF)
    ctx.set(dut.s_axi_wstrb, 0xF)
    ctx.set(dut.s_axi_awvalid, 1)
    ctx.set(dut.s_axi_wvalid, 1)
    ctx.set(dut.s_axi_bready, 1)
    while True:
        _c, _r, ready = await ctx.tick().sample(dut.s_axi_awready)
        if ready:
            break
    ctx.set(dut.s_axi_awvalid, 0)
    ctx.set(dut.s_axi_wvalid, 0)
    while True:
        _c, _r, bvalid = await ctx.tick().sample(dut.s_axi_bvalid)
        if bvalid:
            break


async def axil_read(ctx, dut, addr: int) -> int:
    ctx.set(dut.s_axi_araddr, addr)
    ctx.set(dut.s_axi_arvalid, 1)
    ctx.set(dut.s_axi_rready, 1)
    while True:
        _c, _r, ready = await ctx.tick().sample(dut.s_axi_arready)
        if ready:
            break
    ctx.set(dut.s_axi_arvalid, 0)
    while True:
        _c, _r, rvalid, rdata = await ctx.tick().sample(dut.s_axi_rvalid, dut.s_axi_rdata)
        if rvalid:
            return int(rdata)


def run_batches(
    batches,
    *,
    engine=None,
    valid_prob=1.0,
    ready_prob=1.0,
    seed=0,
    timeout=20000,
    read_regs=("STATUS", "ERR", "DONE_COUNT", "CYCLES_LO"),
    monitor=None,
):
    """Run ``batches`` one after the other on one engine; returns a :class:`BatchResult` each.
    A batch ends when the trailer (``tlast``) is received, or after ``timeout`` cycles without
    one (``timed_out``). ``monitor(ctx)``: an async testbench run in the background from the
    first cycle (e.g. to compare other signals on every cycle)."""
    dut = engine or OffloadEngine()
    lanes = dut.lanes
    rng = random.Random(seed)
    results = []
    state = {"beats": [], "rp": ready_prob}

    async def sink(ctx):
        while True:
            ctx.set(dut.m_axis_tready, int(rng.random() < state["rp"]))
            _c, _r, v, rdy, d, k, last = await ctx.tick().sample(
                dut.m_axis_tvalid, dut.m_axis_tready, dut.m_axis_tdata, dut.m_axis_tkeep, dut.m_axis_tlast
            )
            if v and rdy:
                state["beats"].append((int(d), int(k), int(last)))

    def got_last():
        return bool(state["beats"]) and state["beats"][-1][2] == 1

    async def main(ctx):
        await ctx.tick().repeat(2)
        for b in batches:
            res = BatchResult()
            state["beats"] = []
            vp = valid_prob if b.valid_prob is None else b.valid_prob
            state["rp"] = ready_prob if b.ready_prob is None else b.ready_prob
            limit = timeout if b.timeout is None else b.timeout
            if b.table is not None:
                await axil_write(ctx, dut, REG["TABLE_ADDR"], 0)
                for v in b.table:
                    await axil_write(ctx, dut, REG["TABLE_DATA_LO"], v & 0xFFFF_FFFF)
                    await axil_write(ctx, dut, REG["TABLE_DATA_HI"], (v >> 32) & 0xFFFF_FFFF)
            for name, val in b.regs.items():
                await axil_write(ctx, dut, REG[name], val)
            if b.start:
                await axil_write(ctx, dut, REG["CTRL"], 1)
            beats = beats_of(b, lanes)
            n = len(beats)
            i = cyc = 0
            first_acc = last_acc = None
            soft_reset_after = b.soft_reset_after
            while i < n and cyc < limit:
                if soft_reset_after is not None and i == soft_reset_after:
                    ctx.set(dut.s_axis_tvalid, 0)
                    await axil_write(ctx, dut, REG["CTRL"], 2)
                    soft_reset_after = None
                    if b.restart:
                        # what m_axis sent before the reset is the aborted run's (a host
                        # discards it); from here on it is the new run's
                        state["beats"] = []
                        await axil_write(ctx, dut, REG["CTRL"], 1)
                        i, first_acc, res.words_in = 0, None, 0
                        continue
                v = rng.random() < vp
                data, keep, last = beats[i]
                ctx.set(dut.s_axis_tvalid, int(v))
                ctx.set(dut.s_axis_tdata, data)
                ctx.set(dut.s_axis_tlast, last)
                ctx.set(dut.s_axis_tkeep, keep)
                _c, _r, rdy = await ctx.tick().sample(dut.s_axis_tready)
                cyc += 1
                if v and rdy:
                    first_acc = cyc if first_acc is None else first_acc
                    last_acc = cyc
                    res.words_in += _beat_words(keep, lanes)
                    i += 1
            ctx.set(dut.s_axis_tvalid, 0)
            res.accepted = i
            res.in_cycles = (last_acc - first_acc + 1) if first_acc else 0
            wait = 0
            while not got_last() and wait < limit:
                await ctx.tick()
                wait += 1
            if b.start:
                res.timed_out = not got_last()
            await ctx.tick().repeat(3)
            res.beats = list(state["beats"])
            for data, keep, last in res.beats:
                present = [j for j in range(lanes) if (keep >> (8 * j)) & 0xFF]
                for j in present:
                    res.out.append((data >> (64 * j)) & 0xFFFF_FFFF_FFFF_FFFF)
                    res.last.append(int(bool(last) and j == present[-1]))
            for name in read_regs:
                res.regs[name] = await axil_read(ctx, dut, REG[name])
            results.append(res)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(main)
    sim.add_testbench(sink, background=True)
    if monitor is not None:
        sim.add_testbench(monitor, background=True)
    sim.run()
    return results


# Minimal packers for the engine tests (the host's packer is offload/wire.py; these are kept
# separate on purpose so the engine is not tested with the code it is meant to check).


def words_of(record: bytes) -> list[int]:
    return [int.from_bytes(record[i : i + 8].ljust(8, b"\0"), "little") for i in range(0, len(record), 8)]


def pack_var(records) -> list[int]:
    out = []
    for r in records:
        out.append(len(r))
        out += words_of(r)
    return out


def pack_seq(seqs) -> list[int]:
    out = []
    for s in seqs:
        out.append(len(s))
        out += [v & 0xFFFF_FFFF_FFFF_FFFF for v in s]
    return out


def unpack_seq_output(words, n: int):
    """Output words of OP 9 -> list of byte strings (raises if malformed)."""
    out, i = [], 0
    for _ in range(n):
        b = words[i] & 0xFFFF_FFFF
        nw = (b + 7) // 8
        data = b"".join(w.to_bytes(8, "little") for w in words[i + 1 : i + 1 + nw])
        out.append(data[:b])
        i += 1 + nw
    return out, words[i:]


def trailer_fields(word: int):
    """(records completed, error flags, magic) of a trailer word."""
    return word & 0xFFFF_FFFF, (word >> 32) & 0xFFFF, word >> 48
