"""Type-check the whole `offload` package with mypy; exit with mypy's exit code.

The package is assembled by setuptools' ``package-dir`` (``hw/`` is ``offload.hw``, ``sim/`` is
``offload.sim``, ...), a mapping mypy cannot follow from the source tree. So this script builds
the package as Python sees it once installed, a temporary tree of symlinks into the repository,
and runs ``mypy -p offload`` there with the settings of ``[tool.mypy]`` in ``pyproject.toml``.
Error paths are printed relative to the repository (``hw/xxhash.py``, not ``offload/hw/xxhash.py``).

Usage: ``python .ci/typecheck.py [extra mypy options]`` (``make typecheck``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
# the mypy cache outlives the temporary tree: third-party modules are not re-analysed each run
CACHE_DIR = REPO / ".offload-cache" / "mypy"


def package_dirs() -> dict[str, Path]:
    """The ``package-dir`` mapping of pyproject.toml: ``{"offload.hw": <repo>/hw, ...}``."""
    with PYPROJECT.open("rb") as f:
        mapping: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: REPO / folder for name, folder in mapping.items()}


def build_tree(root: Path, dirs: dict[str, Path]) -> dict[str, str]:
    """Link every mapped folder into ``root`` at its package path.

    Returns the prefixes to rewrite in mypy's output (tree path -> repository path)."""
    rewrites: dict[str, str] = {}
    for name, source in sorted(dirs.items(), key=lambda item: item[0].count(".")):
        target = root.joinpath(*name.split("."))
        rel_source = source.relative_to(REPO).as_posix()
        rewrites[target.relative_to(root).as_posix() + "/"] = rel_source + "/"
        if "." in name:
            # a subpackage: link the whole folder (its own subfolders come with it)
            target.symlink_to(source, target_is_directory=True)
            continue
        # the top package: a real folder holding links to its files, so subpackages can be added
        target.mkdir(parents=True)
        for entry in source.iterdir():
            if entry.name != "__pycache__":
                (target / entry.name).symlink_to(entry)
    return rewrites


def relocate(line: str, rewrites: dict[str, str]) -> str:
    """Map a tree path at the start of a mypy output line back to the repository."""
    # longest prefix first: offload/hw/ before offload/
    for prefix in sorted(rewrites, key=len, reverse=True):
        if line.startswith(prefix):
            return rewrites[prefix] + line[len(prefix) :]
    return line


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="offload-typecheck-") as tmp:
        root = Path(tmp)
        rewrites = build_tree(root, package_dirs())
        command = [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(PYPROJECT),
            "--cache-dir",
            str(CACHE_DIR),
            *argv,
            "-p",
            "offload",
        ]
        env = {**os.environ, "MYPYPATH": str(root)}
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        for line in result.stdout.splitlines():
            print(relocate(line, rewrites))
        sys.stderr.write(result.stderr)
        return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
