"""The suite's own scheduling: ``make test`` runs ``pytest -n 2 --dist loadgroup``, and modules
that share one resource (the Ray cluster budget, the Verilator builds, one engine simulation per
bus width) put their tests in one ``xdist_group`` so that they run one at a time on one worker.

pytest 9.2 with pytest-xdist 3.8 ignores the groups without a word (xdist renames the items'
``_nodeid``, which pytest 9.2 no longer reads); ``pyproject.toml`` pins pytest below 9.2. This
test runs a small suite the way ``make test`` does and checks that a group stays on one worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GROUPED = """
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("shared")


@pytest.fixture(scope="module", params=[1, 2])
def width(request):
    return request.param


@pytest.mark.parametrize("i", range(4))
def test_member(width, i):
    out = Path(os.environ["GROUP_LOG"])
    with out.open("a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""


def test_an_xdist_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    log = tmp_path / "workers.log"
    env = dict(os.environ, GROUP_LOG=str(log))
    env.pop("PYTEST_XDIST_WORKER", None)
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    workers = log.read_text().split()
    assert len(workers) == 8
    assert len(set(workers)) == 1, f"one group ran on workers {sorted(set(workers))}"
