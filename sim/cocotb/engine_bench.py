"""cocotb tests of ``offload_axi`` (runs inside the simulator; see :mod:`offload.sim.cocotb.runner`).

The stimulus and the expected outputs come from the plan file named by ``OFFLOAD_COCOTB_PLAN``
(written by :mod:`offload.sim.cocotb.plan` on the host, from the golden models). The bench only
drives and compares:

* AXI-Stream in/out with cocotbext-axi ``AxiStreamSource``/``AxiStreamSink``; idle gaps and
  backpressure come from ``set_pause_generator`` with per-job seeded random generators;
* AXI-Lite with ``AxiLiteMaster`` (parameters, boundary table, ``CTRL``, ``STATUS``, ``ERR``,
  ``DONE_COUNT``, ``CYCLES``);
* every wait is bounded (``with_timeout``): a hang fails the job instead of stalling the run.
"""

from __future__ import annotations

import json
import os
import random
import struct
import warnings
import zlib

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, SimTimeoutError, with_timeout

try:
    from cocotb.simtime import get_sim_time
except ImportError:  # cocotb < 2.1
    from cocotb.utils import get_sim_time
from cocotbext.axi import (
    AxiLiteBus,
    AxiLiteMaster,
    AxiStreamBus,
    AxiStreamFrame,
    AxiStreamSink,
    AxiStreamSource,
)

from offload.engine_map import (
    CTRL_SOFT_RESET,
    CTRL_START,
    REGISTERS,
    RW_REGISTERS,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
)

# cocotbext-axi 0.1.28 uses APIs cocotb 2 deprecates; the warnings are noise here.
warnings.filterwarnings("ignore", category=DeprecationWarning)

REG = REGISTERS
RW_REGS = RW_REGISTERS
BUSY, DONE, ERROR = STATUS_BUSY, STATUS_DONE, STATUS_ERROR
PERIOD_NS = 10


def _load_plan() -> dict:
    path = os.environ.get("OFFLOAD_COCOTB_PLAN")
    if not path:
        raise RuntimeError("OFFLOAD_COCOTB_PLAN is not set (the runner writes the plan)")
    with open(path) as f:
        return json.load(f)


def _pause_gen(prob: float, seed: int):
    rng = random.Random(seed)
    while True:
        yield rng.random() < prob


class Env:
    def __init__(self, dut):
        self.dut = dut
        self.src = AxiStreamSource(
            AxiStreamBus.from_prefix(dut, "s_axis"), dut.aclk, dut.aresetn, reset_active_level=False
        )
        self.sink = AxiStreamSink(
            AxiStreamBus.from_prefix(dut, "m_axis"), dut.aclk, dut.aresetn, reset_active_level=False
        )
        self.axil = AxiLiteMaster(
            AxiLiteBus.from_prefix(dut, "s_axi"), dut.aclk, dut.aresetn, reset_active_level=False
        )
        for lg in (self.src.log, self.sink.log, self.axil.write_if.log, self.axil.read_if.log):
            lg.setLevel("WARNING")

    async def start(self):
        cocotb.start_soon(Clock(self.dut.aclk, PERIOD_NS, unit="ns").start())
        self.dut.aresetn.value = 0
        await ClockCycles(self.dut.aclk, 8)
        self.dut.aresetn.value = 1
        await ClockCycles(self.dut.aclk, 4)

    async def cycles(self, n: int):
        await ClockCycles(self.dut.aclk, n)

    async def write(self, name: str, value: int):
        await with_timeout(self.axil.write_dword(REG[name], value & 0xFFFFFFFF), 200 * PERIOD_NS, "ns")

    async def read(self, name_or_addr) -> int:
        addr = REG[name_or_addr] if isinstance(name_or_addr, str) else name_or_addr
        return await with_timeout(self.axil.read_dword(addr), 200 * PERIOD_NS, "ns")

    async def setup(self, regs: dict, table: list):
        for name, value in regs.items():
            await self.write(name, value)
        if table:
            await self.write("TABLE_ADDR", 0)
            for t in table:
                await self.write("TABLE_DATA_LO", t & 0xFFFFFFFF)
                await self.write("TABLE_DATA_HI", t >> 32)

    def frame(self, words: list, bad_tkeep=()) -> AxiStreamFrame:
        data = struct.pack(f"<{len(words)}Q", *words)
        tkeep = None
        if bad_tkeep:
            tkeep = [1] * len(data)
            for i in bad_tkeep:
                for k in range(4, 8):  # high half "not kept"
                    tkeep[8 * i + k] = 0
        return AxiStreamFrame(data, tkeep=tkeep)


def _fmt_words(ws, limit=6):
    s = ", ".join(f"0x{w:016x}" for w in ws[:limit])
    return f"[{s}{', ...' if len(ws) > limit else ''}] ({len(ws)} words)"


def _first_diff(got, exp):
    for i, (a, b) in enumerate(zip(got, exp)):
        if a != b:
            return i
    return min(len(got), len(exp))


async def run_batch(env: Env, job: dict) -> list[str]:
    """Run one batch job; returns the list of problems (empty when it matched)."""
    errs: list[str] = []
    name = job["name"]
    exp_out, exp_err = job["expect_out"], job["expect_err"]
    n_words = sum(len(f) for f in job["frames"]) + len(exp_out)
    limit = (40 * n_words + 4000) * PERIOD_NS
    await env.setup(job["regs"], job["table"])
    if job["start"]:
        await env.write("CTRL", CTRL_START)
    else:  # flags of the previous batch stay until START or SOFT_RESET: clear them
        await env.write("CTRL", CTRL_SOFT_RESET)
    seed = zlib.crc32(name.encode()) ^ job.get("seed", 0)
    if job["idle"]:
        env.src.set_pause_generator(_pause_gen(job["idle"], seed))
    if job["backpressure"]:
        env.sink.set_pause_generator(_pause_gen(job["backpressure"], seed + 1))
    for k, fr in enumerate(job["frames"]):
        if fr:
            await env.src.send(env.frame(fr, job["bad_tkeep"] if k == 0 else ()))
    got: list[int] = []
    try:
        if exp_out:
            rx = await with_timeout(env.sink.recv(), limit, "ns")
            data = bytes(rx.tdata)
            got = list(struct.unpack(f"<{len(data) // 8}Q", data[: len(data) // 8 * 8]))
        await with_timeout(env.src.wait(), limit, "ns")
    except SimTimeoutError:
        errs.append(
            f"{name}: HANG: no trailer / input not accepted within {limit // PERIOD_NS} "
            f"cycles (received {len(got)} words)"
        )
        env.src.clear()
        await env.write("CTRL", CTRL_SOFT_RESET)
    env.src.clear_pause_generator()
    env.sink.clear_pause_generator()
    env.sink.pause = False
    env.src.pause = False
    await env.cycles(8)
    if errs:
        return errs
    if got != exp_out:
        i = _first_diff(got, exp_out)
        errs.append(
            f"{name}: output differs at word {i}: got "
            f"{_fmt_words(got[i:])} expected {_fmt_words(exp_out[i:])}"
        )
    if not env.sink.empty():
        errs.append(f"{name}: {env.sink.count()} extra output packet(s) after the trailer")
        env.sink.clear()
    err = await env.read("ERR")
    status = await env.read("STATUS")
    if err != exp_err:
        errs.append(f"{name}: ERR register 0x{err:x}, expected 0x{exp_err:x}")
    if job["start"]:
        want_status = DONE | (ERROR if exp_err else 0)
        if status != want_status:
            errs.append(f"{name}: STATUS 0x{status:x}, expected 0x{want_status:x}")
        completed = exp_out[-1] & 0xFFFFFFFF if exp_out else 0
        done_count = await env.read("DONE_COUNT")
        if done_count != completed:
            errs.append(f"{name}: DONE_COUNT {done_count}, expected {completed}")
        cyc = await env.read("CYCLES_LO") | (await env.read("CYCLES_HI")) << 32
        if not 0 < cyc < 10 * limit // PERIOD_NS:
            errs.append(f"{name}: CYCLES {cyc} is not plausible")
    elif status & BUSY:
        errs.append(f"{name}: STATUS 0x{status:x} busy without START")
    return errs


async def run_soft_reset(env: Env, job: dict) -> list[str]:
    """START a batch, stall the output, SOFT_RESET: idle, flags clear, nothing sent."""
    errs: list[str] = []
    name = job["name"]
    await env.setup(job["regs"], job["table"])
    await env.write("CTRL", CTRL_START)
    env.sink.pause = True
    await env.src.send(env.frame(job["frames"][0]))
    await env.cycles(len(job["frames"][0]) + 120)
    st = await env.read("STATUS")
    if not st & BUSY:
        errs.append(f"{name}: STATUS 0x{st:x} not busy with the output stalled")
    await env.write("CTRL", CTRL_SOFT_RESET)
    await env.cycles(4)
    env.sink.pause = False
    await env.cycles(40)
    try:
        await with_timeout(env.src.wait(), 2000 * PERIOD_NS, "ns")
    except SimTimeoutError:
        errs.append(f"{name}: input not drained after SOFT_RESET")
        env.src.clear()
    st, err = await env.read("STATUS"), await env.read("ERR")
    if st != 0 or err not in (0, 4):  # words still arriving after the reset are EXTRA_DATA
        errs.append(f"{name}: after SOFT_RESET STATUS 0x{st:x} ERR 0x{err:x}, expected idle")
    if not env.sink.empty():
        errs.append(f"{name}: {env.sink.count()} packet(s) sent after SOFT_RESET")
        env.sink.clear()
    return errs


@cocotb.test()
async def test_registers(dut):
    """ID/VERSION/CAPS/OPS/SEQ_MAX, read-back of RW registers, unlisted and aliased addresses."""
    plan = _load_plan()
    env = Env(dut)
    await env.start()
    exp = plan["registers"]
    errs = []
    for name in ("ID", "VERSION", "CAPS", "OPS", "OPS_HI", "SEQ_MAX", "RECORD_MAX"):
        v = await env.read(name)
        if v != exp[name]:
            errs.append(f"{name} reads 0x{v:08x}, expected 0x{exp[name]:08x}")
    for name in ("STATUS", "ERR", "DONE_COUNT"):
        v = await env.read(name)
        if v != 0:
            errs.append(f"{name} reads 0x{v:x} after reset, expected 0")
    rng = random.Random(int(os.environ.get("OFFLOAD_COCOTB_SEED", "1")))
    vals = {n: rng.getrandbits(32) for n in RW_REGS}
    for n, v in vals.items():
        await env.write(n, v)
    for n, v in vals.items():
        got = await env.read(n)
        if got != v:
            errs.append(f"{n} reads back 0x{got:08x}, wrote 0x{v:08x}")
    # the address after the last register, and two far ones (none of them a register)
    unlisted = (max(REG.values()) + 4, 0x7C, 0xFC)
    assert not set(unlisted) & set(REG.values()), unlisted
    for addr in unlisted:
        v = await env.read(addr)
        if v != 0:
            errs.append(f"unlisted address 0x{addr:02x} reads 0x{v:x}, expected 0")
    v = await env.read(0x100 + REG["ID"])  # higher address bits alias
    if v != exp["ID"]:
        errs.append(f"0x100 (alias of ID) reads 0x{v:08x}")
    assert not errs, "\n".join(errs)


@cocotb.test()
async def test_plan(dut) -> None:
    """Every job of the plan, in order, on one engine (no reset between jobs)."""
    plan = _load_plan()
    env = Env(dut)
    await env.start()
    only = os.environ.get("OFFLOAD_COCOTB_ONLY")
    errs: list[str] = []
    ran = 0
    for job in plan["jobs"]:
        if only and only not in job["name"]:
            continue
        ran += 1
        if job["kind"] == "soft_reset":
            errs += await run_soft_reset(env, job)
        else:
            errs += await run_batch(env, job)
    assert ran, "the plan selected no job"
    dut._log.warning(
        "offload bench: %d jobs, %d problems, %d cycles", ran, len(errs), int(get_sim_time("ns")) // PERIOD_NS
    )
    assert not errs, f"{len(errs)} problem(s) in {ran} jobs:\n" + "\n".join(errs[:20])
