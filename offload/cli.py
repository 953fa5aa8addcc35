"""The ``offload`` command line: demo, bench, backends, serve, synth, export-rtl."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence


def _delegate(target: str) -> Callable[[list[str]], int]:
    """A subcommand implemented by another module's ``main(argv) -> int``."""
    def run(argv: list[str]) -> int:
        module, fn = target.split(":")
        try:
            main = getattr(importlib.import_module(module), fn)
        except ImportError as e:
            print(f"offload: this command needs {module}, which cannot be imported: {e}",
                  file=sys.stderr)
            return 2
        return int(main(argv) or 0)
    return run


def _backends(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="offload backends",
                                description="List every backend with its status and the reason.")
    p.add_argument("--fpga", default=None, help="fpga device: 'sim' for the simulated PYNQ device")
    p.add_argument("--smartnic", default=None, help="HOST:PORT of an 'offload serve'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    from offload.runtime import BACKEND_FACTORIES, Runtime
    with Runtime(backends=list(BACKEND_FACTORIES), fpga=a.fpga, smartnic=a.smartnic) as rt:
        rows = rt.backends()
    if a.json:
        print(json.dumps([{"backend": n, "available": ok, "reason": r} for n, ok, r in rows],
                         indent=2))
    else:
        w = max(len(n) for n, _, _ in rows)
        for n, ok, r in rows:
            print(f"{n:<{w}}  {'available  ' if ok else 'unavailable'}  {r}")
    return 0


BENCH_GROUPS = {
    "devices": "offload.host.bench_devices:rows",
    "smartnic": "offload.host.smartnic.bench:rows",
}


def _bench(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="offload bench",
                                description="Benchmarks as ratios against baselines in the same run.")
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--json", metavar="PATH", default="bench.json", help="write results here")
    p.add_argument("--only", default=None,
                   help=f"comma-separated device groups to add to the CPU rows: {', '.join(BENCH_GROUPS)}")
    a = p.parse_args(argv)
    from offload import bench
    # Device and service benchmark groups register themselves here (each is optional).
    for name, target in BENCH_GROUPS.items():
        if a.only and name not in a.only.split(","):
            continue
        module, fn = target.split(":")
        try:
            bench.register(name, getattr(importlib.import_module(module), fn))
        except (ImportError, AttributeError) as e:
            print(f"offload bench: skipping {name}: {e}", file=sys.stderr)
    results = bench.run_benchmarks(quick=a.quick)
    print(bench.format_table(results))
    with open(a.json, "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(f"\nwrote {a.json}")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "demo": ("the main job: a synthetic recsys batch on every available backend",
             _delegate("offload.demo:main")),
    "bench": ("benchmarks (ratios against baselines measured in the same run)", _bench),
    "backends": ("list backends with status and reason", _backends),
    "serve": ("run the SmartNIC/DPU offload service", _delegate("offload.host.smartnic.server:main")),
    "synth": ("Yosys/nextpnr resource and Fmax reports for the cores",
              _delegate("offload.hw.synth:main")),
    "export-rtl": ("regenerate rtl/ from hw/ (Amaranth to Verilog)",
                   _delegate("offload.hw.export:main")),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: offload COMMAND [options]\n\ncommands:")
        for name, (help_, _) in COMMANDS.items():
            print(f"  {name:<11} {help_}")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from offload import __version__
        print(f"offload {__version__}")
        return 0
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        print(f"offload: unknown command {argv[0]!r} (try 'offload --help')", file=sys.stderr)
        return 2
    return cmd[1](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
