"""Registers into the ECP5 multipliers: a pass over Yosys's ``synth_ecp5`` JSON netlist.

An ECP5 ``MULT18X18D`` has its own input registers (A, B) and output register (P). Yosys 0.70's
``synth_ecp5`` maps a ``$mul`` to the block with every register bypassed and leaves the design's
operand and product registers in the fabric (it absorbs them for Nexus only), so a registered
16x16 multiply is timed as fabric flip-flop -> route -> the whole multiplier -> route ->
flip-flop: 3.93 ns in the block and 5.8-6.5 ns of routing, the engine's critical path at two of
three placements. Lattice's own synthesis and Vivado (for the DSP48E1) move such registers into
the block; this pass does the same on the netlist nextpnr places, and nextpnr times the block by
its register configuration (setup at A/B, clock-to-out at P).

A multiplier's inputs move in when every non-constant A and B bit is driven by a flip-flop that
drives nothing else, is always enabled, never reset (``LSR`` tied 0), has its global reset
disabled, powers up at 0 (as the block's registers do) and shares one clock; both inputs or
neither (the block has no timing for one registered input). Its output moves in when every
used P bit drives exactly one such flip-flop and nothing else. The flip-flops are removed and
the block's pins take their D (inputs) or Q (output) nets, so the netlist computes the same
values in the same cycles.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Port groups of ``MULT18X18D`` (18 bits each; P is 36).
A_PINS = tuple(f"A{i}" for i in range(18))
B_PINS = tuple(f"B{i}" for i in range(18))
P_PINS = tuple(f"P{i}" for i in range(36))
#: The block's register parameters set when a group moves in (``CLK0``, with ``CE0`` tied 1 and
#: ``RST0`` tied 0: the defaults' clock-enable and reset selections).
REG_PARAMS = {"A": "REG_INPUTA_CLK", "B": "REG_INPUTB_CLK", "P": "REG_OUTPUT_CLK"}

Bit = int | str  # a net number, or a constant "0"/"1"/"x"/"z"


@dataclass
class DspRegisterStats:
    """What :func:`absorb_dsp_registers` did: multipliers seen, with inputs and with output
    moved in, and flip-flops removed."""

    multipliers: int = 0
    inputs_absorbed: int = 0
    outputs_absorbed: int = 0
    flip_flops_removed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))

    def note(self) -> str | None:
        """A synthesis result's note: what moved in (None when nothing did)."""
        if not self.flip_flops_removed:
            return None
        return (
            f"MULT18X18D registers in use: inputs of {self.inputs_absorbed}, outputs of "
            f"{self.outputs_absorbed} of {self.multipliers} blocks ({self.flip_flops_removed} "
            "flip-flops moved in; FF counts are before)"
        )


def _simple_ff(cell: dict[str, Any]) -> Bit | None:
    """The clock net of a ``TRELLIS_FF`` that loads every cycle, is never reset and powers up
    at 0, else None."""
    if cell["type"] != "TRELLIS_FF":
        return None
    p, c = cell["parameters"], cell["connections"]
    always = p.get("CEMUX", "CE").strip() == "1" or c.get("CE") == ["1"]
    no_reset = c.get("LSR", ["0"]) == ["0"] or p.get("LSRMUX", "LSR").strip() == "0"
    # REGSET: the value it powers up with (the block's registers power up at 0).
    zero = p.get("REGSET", "RESET") == "RESET"
    if not (always and no_reset and zero and p.get("CLKMUX", "CLK") == "CLK" and p.get("GSR") == "DISABLED"):
        return None
    return c["CLK"][0]


class _Netlist:
    def __init__(self, module: dict[str, Any]):
        self.cells: dict[str, dict[str, Any]] = module["cells"]
        self.driver: dict[Bit, tuple[str, str]] = {}
        self.sinks: dict[Bit, list[tuple[str, str]]] = defaultdict(list)
        for name, cell in self.cells.items():
            for port, bits in cell["connections"].items():
                out = cell["port_directions"].get(port) == "output"
                for b in bits:
                    if isinstance(b, str):
                        continue
                    if out:
                        self.driver[b] = (name, port)
                    else:
                        self.sinks[b].append((name, port))
        self.port_bits = {
            b for p in module.get("ports", {}).values() for b in p["bits"] if not isinstance(b, str)
        }

    def flip_flop(self, name: str) -> bool:
        """A flip-flop still in the netlist (one moved into a block is gone)."""
        return name in self.cells and self.cells[name]["type"] == "TRELLIS_FF"

    def pin(self, cell: dict[str, Any], port: str) -> Bit | None:
        bits = cell["connections"].get(port)
        return bits[0] if bits else None

    def input_ffs(self, dsp: str, pins: tuple[str, ...]) -> dict[str, str] | None:
        """Pin -> the flip-flop driving it alone, for every non-constant pin, or None."""
        out = {}
        for port in pins:
            b = self.pin(self.cells[dsp], port)
            if b is None or isinstance(b, str):
                continue
            drv = self.driver.get(b)
            if drv is None or drv[1] != "Q" or not self.flip_flop(drv[0]):
                return None
            if b in self.port_bits or self.sinks[b] != [(dsp, port)]:
                return None
            out[port] = drv[0]
        return out or None

    def output_ffs(self, dsp: str) -> dict[str, str] | None:
        """Pin -> the flip-flop it alone drives, for every used P pin, or None."""
        out = {}
        for port in P_PINS:
            b = self.pin(self.cells[dsp], port)
            if b is None or isinstance(b, str) or not self.sinks[b]:
                continue
            s = self.sinks[b]
            if len(s) != 1 or s[0][1] != "DI" or not self.flip_flop(s[0][0]) or b in self.port_bits:
                return None
            out[port] = s[0][0]
        return out or None

    def one_clock(self, ffs: list[str]) -> Bit | None:
        clocks = {_simple_ff(self.cells[f]) for f in ffs}
        return clocks.pop() if len(clocks) == 1 and None not in clocks else None


def absorb_dsp_registers(netlist: dict[str, Any], top: str = "top") -> DspRegisterStats:
    """Move the flip-flops around each ``MULT18X18D`` of ``netlist["modules"][top]`` into the
    block's registers (in place; rules in the module docstring)."""
    module = netlist["modules"][top]
    n = _Netlist(module)
    stats = DspRegisterStats()
    for name in [k for k, c in n.cells.items() if c["type"] == "MULT18X18D"]:
        dsp = n.cells[name]
        stats.multipliers += 1
        if any(dsp["parameters"].get(p, "NONE").strip() != "NONE" for p in REG_PARAMS.values()):
            continue
        a, b, p = n.input_ffs(name, A_PINS), n.input_ffs(name, B_PINS), n.output_ffs(name)
        in_clock = n.one_clock([*a.values(), *b.values()]) if a and b else None
        out_clock = n.one_clock(list(p.values())) if p else None
        groups = {"A": a, "B": b} if a and b and in_clock is not None else {}
        if p and out_clock is not None and (not groups or out_clock == in_clock):
            groups["P"] = p
        clock = in_clock if groups.keys() & {"A"} else out_clock
        if not groups or clock is None:
            continue
        for group, pins in groups.items():
            for port, ff in pins.items():
                cell = n.cells.pop(ff)
                dsp["connections"][port] = list(cell["connections"]["DI" if group != "P" else "Q"])
            dsp["parameters"][REG_PARAMS[group]] = "CLK0"
            stats.flip_flops_removed += len(pins)
        stats.inputs_absorbed += "A" in groups
        stats.outputs_absorbed += "P" in groups
        dsp["connections"].update({"CLK0": [clock], "CE0": ["1"], "RST0": ["0"]})
        dsp["port_directions"].update({"CLK0": "input", "CE0": "input", "RST0": "input"})
        dsp["parameters"]["GSR"] = "DISABLED"
    return stats


def absorb_file(path: Path, top: str = "top") -> DspRegisterStats:
    """:func:`absorb_dsp_registers` on a JSON netlist file, rewritten in place."""
    netlist = json.loads(path.read_text())
    stats = absorb_dsp_registers(netlist, top)
    if stats.flip_flops_removed:
        path.write_text(json.dumps(netlist))
    return stats
