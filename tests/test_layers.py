"""The layers of docs/architecture.md, as their module-level imports show them.

Each module's top-level ``import`` statements are read (imports inside functions are how optional
extras and backends are loaded on use, and are not layer edges). A new edge that crosses a layer
the wrong way fails here with the module and the import named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: folder -> import package (pyproject's package-dir)
PACKAGES = {"offload": "offload", "hw": "offload.hw", "sim": "offload.sim", "host": "offload.host"}

FOUNDATION = {
    "offload.golden",
    "offload.engine_map",
    "offload.golden_cityhash",
    "offload.golden_murmur3",
    "offload.golden_sigrid",
}
CORE = {
    "offload.ops",
    "offload.batch",
    "offload.columnar",
    "offload.backend",
    "offload.wire",
    "offload.costmodel",
    "offload.runtime",
}
OPTIONAL = ("amaranth", "pynq", "cocotb", "cocotbext", "pyverilator", "matplotlib")


def _modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.with_suffix("").relative_to(ROOT / folder).parts
            name = ".".join((pkg, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def _resolve(module: str, node: ast.ImportFrom, package: bool = False) -> list[str]:
    """The modules an import-from statement names (``from offload import golden`` names
    ``offload.golden``; a relative import is resolved against ``module``, which is a package's
    ``__init__`` when ``package``)."""
    if node.level:
        parts = module.split(".") + ([""] if package else [])
        base = parts[: -node.level]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target == "offload":
        return [f"offload.{a.name}" for a in node.names]
    return [target]


def top_level_imports(module: str, path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            names.update(_resolve(module, node, path.name == "__init__.py"))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


MODULES = _modules()


def _allowed(module: str, imported: str) -> bool:
    if not imported.startswith(("offload", *OPTIONAL)):
        return True  # the standard library and the core dependencies (numpy, numba, pyarrow)
    if module in FOUNDATION:  # golden.py names the hashes of the other golden modules
        return imported in FOUNDATION and module == "offload.golden"
    if module in CORE:
        return imported in FOUNDATION | CORE
    if module.startswith("offload.hw"):  # the registry: the op decode is derived from its entries
        return imported in FOUNDATION | {"offload.ops"} or imported.startswith(("offload.hw", "amaranth"))
    if module.startswith("offload.host"):  # the simulated devices' fault descriptions are plain data
        return imported == "offload.sim.faults" or not imported.startswith(
            ("offload.hw", "offload.sim", "amaranth", "cocotb")
        )
    if module.startswith("offload.sim"):
        return not imported.startswith(("offload.hw", "offload.host", "amaranth"))
    return True  # the top: public API, CLI, demo, bench, notebooks helpers


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_respect_the_layers(module):
    wrong = sorted(i for i in top_level_imports(module, MODULES[module]) if not _allowed(module, i))
    assert wrong == [], f"{module} imports {wrong} at module level (docs/architecture.md)"


def test_the_layer_check_can_fail():
    assert not _allowed("offload.golden", "offload.ops")
    assert not _allowed("offload.ops", "offload.host.cpu")
    assert not _allowed("offload.hw.engine", "offload.wire")
    assert not _allowed("offload.hw.engine", "offload.batch")
    assert _allowed("offload.hw.opdecode", "offload.ops")
    assert not _allowed("offload.host.fpga", "offload.hw.engine")
    assert not _allowed("offload.sim.refmodel", "offload.host.sim_backend")
    assert _allowed("offload.host.fpga", "offload.wire")
    imp = ast.parse("from ..deadline import x").body[0]
    assert _resolve("offload.host.smartnic.backend", imp) == ["offload.host.deadline"]
    imp = ast.parse("from .backend import x").body[0]
    assert _resolve("offload.host.cpu", imp, package=True) == ["offload.host.cpu.backend"]
