"""The core library on numpy 2 without pynq.

The development environment pins numpy<2 because pynq does; the library itself must work on
numpy 2 too. This test builds a separate virtual environment with numpy 2 and the core
dependencies only (no pynq, no amaranth), installs offload into it without dependencies, and runs
the core test modules there.
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_TESTS = [
    "tests/test_api_errors.py",
    "tests/test_runtime.py",
    "tests/test_wire.py",
    "tests/test_golden.py",
    "tests/test_cpu.py",
]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_core_suite_on_numpy2(tmp_path_factory):
    cache = Path(os.environ.get("OFFLOAD_CACHE_DIR") or Path.home() / ".cache" / "offload")
    env_dir = cache / "numpy2-venv"
    py = env_dir / "bin" / "python"
    stamp = env_dir / ".ok"
    pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    if not stamp.exists():
        venv.create(env_dir, with_pip=True, clear=True)
        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "-q",
                "numpy>=2,<3",
                "numba>=0.60,<0.70",
                "pyarrow>=15,<27",
                "google-crc32c>=1.5,<2",
                "xxhash>=3.4,<5",
                "pytest>=8,<10",
                "hypothesis>=6.100,<7",
                "pytest-timeout>=2.3,<3",
                "setuptools>=68",
                "wheel",
            ],
            check=True,
            env=pip_env,
            timeout=600,
        )
        stamp.write_text("ok")
    # offload itself from this checkout, without dependencies: PYTHONPATH to the mapped packages
    # would not give offload.hw/sim/host, so install a non-editable copy into a private target.
    target = tmp_path_factory.mktemp("offload-np2")
    subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        env=pip_env,
        timeout=300,
    )
    code = (
        "import numpy, sys; assert numpy.__version__.startswith('2'), numpy.__version__; "
        "import importlib.util as u; assert u.find_spec('pynq') is None; print(numpy.__version__)"
    )
    env = dict(os.environ, PYTHONPATH=f"{target}{os.pathsep}{ROOT}", NUMBA_CACHE_DIR=str(target / ".numba"))
    env.pop("PYTEST_XDIST_WORKER", None)
    out = subprocess.run([str(py), "-c", code], env=env, capture_output=True, text=True, cwd=target)
    assert out.returncode == 0, out.stderr
    tests = [t for t in CORE_TESTS if (ROOT / t).exists()]
    # --import-mode=append: pytest's default would put the checkout first on sys.path, and its
    # offload/ (without the mapped offload.host, where the cpu backend is) would shadow the copy.
    res = subprocess.run(
        [
            str(py),
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "--import-mode=append",
            "--rootdir",
            str(target),
            *[str(ROOT / t) for t in tests],
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=target,
        timeout=800,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout
