"""The collector's trailer (hw/collector.py) with the control's side of its handshake played by
the testbench (TRAIL until ``write_trailer``, then IDLE; SOFT_RESET: IDLE): the results, then
the trailer once, when the FIFO has room for its row; after a soft reset nothing at all."""

from __future__ import annotations

import pytest
from amaranth.sim import Simulator

from offload.engine_map import ERR_BITS, TRAILER_MAGIC
from offload.hw.collector import Collector
from offload.hw.control import Control
from offload.hw.enginesim import trailer_fields
from offload.hw.fifo import RESULT, SEQ_DATA
from offload.hw.simutil import CLOCK_PERIOD

DEPTH = 16
ERR = 1 << ERR_BITS["EARLY_TLAST"]
M64 = (1 << 64) - 1


def run_batch(lanes: int, words: list[int], *, seq_tail: int = 0, held: int = 0, soft_reset_at=None):
    """``words`` written as results (``lanes`` a cycle) with ``m_axis`` held back, then
    ``seq_tail`` words of an unfinished sequence, then DRAIN, ROLLBACK and TRAIL. ``m_axis`` is
    held back for the first ``held`` cycles of TRAIL; ``soft_reset_at``: SOFT_RESET in that
    cycle of TRAIL. Returns (the words out with their tlast, the level at TRAIL's start, the
    cycles of TRAIL with ``write_trailer``, the cycles after TRAIL with ``write_trailer``)."""
    dut = Collector(lanes, DEPTH)
    out: list[tuple[int, int]] = []
    got: dict = {"ready": 0, "writes": [], "late": []}

    async def sink(ctx):
        while True:
            ctx.set(dut.m_axis_tready, got["ready"])
            _c, _r, v, rdy, d, k, last = await ctx.tick().sample(
                dut.m_axis_tvalid, dut.m_axis_tready, dut.m_axis_tdata, dut.m_axis_tkeep, dut.m_axis_tlast
            )
            if v and rdy:
                present = [j for j in range(lanes) if k >> (8 * j) & 1]
                out.extend((int(d) >> 64 * j & M64, int(last) * (j == present[-1])) for j in present)

    async def write(ctx, kind: int, row: list[int]):
        ctx.set(dut.res_valid, (1 << len(row)) - 1)
        ctx.set(dut.res_kind, kind)
        ctx.set(dut.res_data, sum(w << 64 * j for j, w in enumerate(row)))
        await ctx.tick()

    async def control(ctx):
        ctx.set(dut.err, ERR)
        ctx.set(dut.state, Control.RUN)
        for i in range(0, len(words), lanes):
            await write(ctx, RESULT, words[i : i + lanes])
        for w in range(seq_tail):
            await write(ctx, SEQ_DATA, [w])
        ctx.set(dut.res_valid, 0)
        ctx.set(dut.state, Control.DRAIN)
        await ctx.tick().repeat(3)
        ctx.set(dut.state, Control.ROLLBACK)
        await ctx.tick()
        ctx.set(dut.state, Control.TRAIL)
        got["level"] = ctx.get(dut.level)
        for cyc in range(200):
            reset = cyc == soft_reset_at
            got["ready"] = int(cyc >= held)
            ctx.set(dut.soft_reset, reset)
            ctx.set(dut.core_clr, reset)
            _c, _r, wt = await ctx.tick().sample(dut.write_trailer)
            if wt:
                got["writes"].append(cyc)
            if wt or reset:
                break
        ctx.set(dut.state, Control.IDLE)
        ctx.set(dut.soft_reset, 0)
        ctx.set(dut.core_clr, 0)
        got["ready"] = 1
        for cyc in range(40):
            _c, _r, wt = await ctx.tick().sample(dut.write_trailer)
            if wt:
                got["late"].append(cyc)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(control)
    sim.add_testbench(sink, background=True)
    sim.run()
    return out, got["level"], got["writes"], got["late"]


def trailer(n: int) -> int:
    return n | ERR << 32 | TRAILER_MAGIC << 48


@pytest.mark.parametrize("lanes", [1, 2])
def test_trailer_waits_for_room_in_a_full_fifo(lanes):
    """The FIFO full when TRAIL starts (two rows more than its depth: two wait in its output
    queue): no trailer while ``m_axis`` is held back, then the results and the trailer once."""
    words = list(range(1, DEPTH + 2 * lanes + 1))
    out, level, writes, late = run_batch(lanes, words, held=20)
    assert level == DEPTH
    assert len(writes) == 1 and writes[0] > 20 and late == []
    assert out == [(w, 0) for w in words] + [(trailer(len(words)), 1)]
    assert trailer_fields(out[-1][0]) == (len(words), ERR, TRAILER_MAGIC)


@pytest.mark.parametrize("lanes", [1, 2])
def test_trailer_after_the_rollback_of_an_open_sequence(lanes):
    """ROLLBACK drops the unfinished sequence's words (and its header slot); the trailer, written
    after it, follows the committed results."""
    words = [11, 12, 13, 14]
    out, _level, writes, late = run_batch(lanes, words, seq_tail=3)
    assert len(writes) == 1 and late == []
    assert out == [(w, 0) for w in words] + [(trailer(len(words)), 1)]


@pytest.mark.parametrize("room,at", [(True, 0), (True, 1), (False, 0), (False, 1), (False, 5)])
def test_soft_reset_in_trail_writes_no_trailer(room, at):
    """SOFT_RESET in TRAIL's cycle ``at`` (with room, the trailer's write is due in cycle 1:
    the reset before it or with it; the FIFO full, the trailer waiting): the FIFO is emptied,
    no trailer leaves, none is written after."""
    words = list(range(1, 4 if room else DEPTH + 3))
    out, _level, writes, late = run_batch(1, words, held=200, soft_reset_at=at)
    assert out == [] and late == [] and set(writes) <= {at}
