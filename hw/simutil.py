"""Helpers to run the offload cores in the Amaranth simulator as plain Python functions.

Tests and notebooks wrap a simulated core as a function of its inputs (``sim_xxh64(records,
seed)``) and compare it with the golden model as an equation. Two drivers:

* :func:`run_flow`: a core whose input is always ready and whose output must always be taken
  (the flow-through cores). Beats are applied one per cycle, ``None`` entries are idle cycles.
* :func:`run_handshake`: a core with a real ``ready`` on its input and/or output: random
  ``valid`` deassertion on the input and random ``ready`` deassertion on the output.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from amaranth.hdl import Const, Value
from amaranth.sim import Simulator

__all__ = ["run_flow", "run_handshake", "set_payload", "EqualWatch", "CLOCK_PERIOD"]

CLOCK_PERIOD = 1e-8


def set_payload(ctx, port, value) -> None:
    """Set a stream payload from an int or a dict of field values (nested one level)."""
    if isinstance(value, dict):
        for k, v in value.items():
            ctx.set(getattr(port, k), v)
    else:
        ctx.set(port, value)


class EqualWatch:
    """A background testbench that compares pairs of signals on every clock cycle.

    ``pairs`` holds ``(name, a, b)``; it may be set after construction, before the simulation
    starts (the signals of a design built by the driver). Each cycle where ``a != b`` appends
    ``(cycle, name, a_value, b_value)`` to :attr:`differ`; :attr:`cycles` counts the cycles
    seen. Pass :meth:`run` as a driver's ``monitor``."""

    def __init__(self, pairs: Sequence[tuple[str, Value, Value]] = ()):
        self.pairs = list(pairs)
        self.differ: list[tuple[int, str, int, int]] = []
        self.cycles = 0

    async def run(self, ctx) -> None:
        pairs = list(self.pairs)
        sigs = [s for _n, a, b in pairs for s in (a, b)]
        async for _clk, _rst, *vals in ctx.tick().sample(*sigs):
            self.cycles += 1
            for k, (name, _a, _b) in enumerate(pairs):
                if vals[2 * k] != vals[2 * k + 1]:
                    self.differ.append((self.cycles, name, vals[2 * k], vals[2 * k + 1]))


def _setup(ctx, dut, params):
    for k, v in (params or {}).items():
        obj = dut
        for part in k.split("."):
            obj = getattr(obj, part)
        ctx.set(obj, v)


def run_flow(
    dut,
    beats,
    n_results: int,
    *,
    params=None,
    settle: int = 3,
    timeout: int = 1000,
    out_port: str = "o",
    in_port: str = "i",
    pre=None,
    monitor=None,
):
    """Apply ``beats`` (payload ints/dicts, ``None`` = idle cycle) to ``dut.<in_port>`` one per
    cycle, collect ``n_results`` payloads from ``dut.<out_port>``; returns (results, cycles)
    where ``cycles`` maps result index to the cycle it appeared. ``pre(ctx)``: an async
    function run after setting ``params`` and before the beats (e.g. to load a table).
    ``monitor(ctx)``: an async testbench run in the background from the first cycle (e.g. to
    compare other signals on every cycle)."""
    results: list[int] = []
    when: list[int] = []
    inp, out = getattr(dut, in_port), getattr(dut, out_port)

    async def collect(ctx):
        cycle = 0
        async for _clk, _rst, valid, payload in ctx.tick().sample(out.valid, out.payload):
            cycle += 1
            if valid:
                results.append(int(payload) if not hasattr(payload, "as_value") else payload)
                when.append(cycle)

    async def driver(ctx):
        _setup(ctx, dut, params)
        if pre is not None:
            await pre(ctx)
        await ctx.tick().repeat(settle)
        for b in beats:
            if b is None:
                ctx.set(inp.valid, 0)
            else:
                ctx.set(inp.valid, 1)
                set_payload(ctx, inp.payload, b)
            await ctx.tick()
        ctx.set(inp.valid, 0)
        for _ in range(timeout):
            if len(results) >= n_results:
                break
            await ctx.tick()
        await ctx.tick().repeat(2)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(driver)
    sim.add_testbench(collect, background=True)
    if monitor is not None:
        sim.add_testbench(monitor, background=True)
    sim.run()
    return results, when


def run_handshake(
    dut,
    beats,
    n_results: int,
    *,
    params=None,
    valid_prob: float = 1.0,
    ready_prob: float = 1.0,
    rng=None,
    settle: int = 3,
    timeout: int = 5000,
    in_port: str = "i",
    out_port: str = "o",
    done=None,
):
    """Drive ``beats`` through a valid/ready input (random ``valid`` gaps) and take results from a
    valid/ready output (random ``ready`` gaps; if the output has no ``ready`` it is ignored).
    Stops ``n_results`` results (or when ``done(results)`` is true) after the last beat.
    Returns (results, stats) with stats ``cycles`` and ``accepted`` input beats."""
    rng = rng or random.Random(0)
    results = []
    inp, out = getattr(dut, in_port), getattr(dut, out_port)
    has_oready = not isinstance(out.ready, Const)
    stats = {"cycles": 0, "accepted": 0}

    async def sink(ctx):
        while True:
            r = rng.random() < ready_prob
            if has_oready:
                ctx.set(out.ready, int(r))
            _clk, _rst, valid, ready, payload = await ctx.tick().sample(out.valid, out.ready, out.payload)
            if valid and ready:
                results.append(payload)

    async def driver(ctx):
        _setup(ctx, dut, params)
        await ctx.tick().repeat(settle)
        i = 0
        while i < len(beats):
            v = rng.random() < valid_prob
            ctx.set(inp.valid, int(v))
            if v:
                set_payload(ctx, inp.payload, beats[i])
            _clk, _rst, ready = await ctx.tick().sample(inp.ready)
            stats["cycles"] += 1
            if v and ready:
                i += 1
                stats["accepted"] += 1
            if stats["cycles"] > timeout * 4:
                raise TimeoutError(f"input stalled after {i} of {len(beats)} beats")
        ctx.set(inp.valid, 0)
        for _ in range(timeout):
            if len(results) >= n_results or (done is not None and done(results)):
                break
            await ctx.tick()
            stats["cycles"] += 1
        await ctx.tick().repeat(2)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(driver)
    sim.add_testbench(sink, background=True)
    sim.run()
    return results, stats
