"""Every device fault x verify mode x fallback setting x device backend ends in an exact result.

A device that fails part-way hands back the records it completed; the runtime verifies exactly those
(``verify="sample"``/``"full"``), recomputes the rest on the next backend and records the fallback.
With ``fallback=False`` the caller gets a :class:`BackendError` whose ``partial`` holds the completed,
verified records. Expected values come from the golden model, never from another backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import offload
from offload import golden
from offload.backend import BackendError
from offload.sim.faults import Fault

N = 3000
CHUNK = 1000
AT = 1500  # the fault hits the second chunk: the first one is complete and must be kept
KEYS = np.arange(N, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
EXPECTED = [golden.xxh64(k.tobytes(), 5) for k in KEYS]
KINDS = ("stall", "drop_tlast", "short_result", "disappear")
VERIFY = ("off", "sample", "full")


def _sim(kind: str) -> offload.Backend:
    from offload.host.sim_backend import SimBackend

    return SimBackend(faults=[Fault(kind, at_record=AT)], chunk_records=CHUNK, stall_cycles=2000)


def _fpga(kind: str) -> offload.Backend:
    pytest.importorskip("pynq", reason="pynq is not installed (pip install 'offload[fpga]')")
    from offload.host.fpga import FpgaBackend

    return FpgaBackend(
        device="sim",
        engine="reference",
        faults=[Fault(kind, at_record=AT)],
        chunk_records=CHUNK,
        timeout_s=0.5,
    )


def _check_complete(rt: offload.Runtime, out: np.ndarray, device: str, verify: str) -> None:
    assert out.tolist() == EXPECTED
    st = rt.stats()
    (fb,) = st["fallbacks"]
    assert fb["from"] == device
    segs = st["last_call"]["segments"]
    assert segs[0][0] == device and segs[-1][2] == N
    assert [s[1] for s in segs] == [0] + [s[2] for s in segs[:-1]]  # in order, nothing twice
    done = segs[0][2] if len(segs) > 1 else N
    assert st["by_backend"][device]["records"] == done
    if verify == "full":  # the device's part and the CPU's part were each verified in full
        assert st["verified_records"] == N
    elif verify == "sample":
        assert 0 < st["verified_records"] <= 2 * rt.sample_size
    else:
        assert st["verified_records"] == 0
    assert st["mismatches"] == []


def _check_strict(rt: offload.Runtime, e: BackendError, device: str, verify: str) -> None:
    k = e.completed
    assert 0 <= k <= N
    assert np.asarray(e.partial if k else [], dtype=np.uint64).tolist()[:k] == EXPECTED[:k]
    st = rt.stats()
    (fb,) = st["fallbacks"]
    assert (fb["from"], fb["to"], fb["at_record"]) == (device, None, k)
    assert st["verified_records"] == (
        k if verify == "full" else min(k, rt.sample_size) if verify == "sample" else 0
    )


@pytest.mark.xdist_group("verilator")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "strict"])
@pytest.mark.parametrize("verify", VERIFY)
@pytest.mark.parametrize("kind", KINDS)
def test_sim_fault(sim_available: None, kind: str, verify: str, fallback: bool) -> None:
    _run_case(_sim(kind), "sim", verify, fallback)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "strict"])
@pytest.mark.parametrize("verify", VERIFY)
@pytest.mark.parametrize("kind", KINDS)
def test_fpga_fault(kind: str, verify: str, fallback: bool) -> None:
    _run_case(_fpga(kind), "fpga", verify, fallback)


def _run_case(be: offload.Backend, device: str, verify: str, fallback: bool) -> None:
    rt = offload.Runtime(backends=[be, "cpu"], verify=verify, fallback=fallback, rng_seed=1)
    try:
        if fallback:
            _check_complete(rt, rt.xxh64(KEYS, seed=5), device, verify)
            return
        with pytest.raises(BackendError) as ei:
            rt.xxh64(KEYS, seed=5)
        _check_strict(rt, ei.value, device, verify)
    finally:
        rt.close()


class _background:
    """Run ``fn`` in a thread for the duration of a ``with`` block (None: nothing)."""

    def __init__(self, fn: Callable[[], None] | None) -> None:
        self.fn = fn
        self.t: threading.Thread | None = None

    def __enter__(self) -> None:
        if self.fn is not None:
            self.t = threading.Thread(target=self.fn)
            self.t.start()

    def __exit__(self, *exc: object) -> None:
        if self.t is not None:
            self.t.join(30)


@pytest.fixture
def killed_service() -> Iterator[tuple[offload.Backend, Callable[[], None]]]:
    from offload.host.smartnic import SmartNicBackend
    from offload.host.smartnic.testing import ServerProcess

    with ServerProcess("--debug-delay-ms", "150", backend="cpu") as srv:
        be = SmartNicBackend(srv.address, chunk_bytes=8 * CHUNK, window=1, retries=0, backoff=0.01)
        assert be.availability().ok

        def kill_after_first_chunk() -> None:
            t_end = time.monotonic() + 20
            while be.stats()["chunks"] < 1 and time.monotonic() < t_end:
                time.sleep(0.005)
            srv.kill()

        yield be, kill_after_first_chunk


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "strict"])
@pytest.mark.parametrize("verify", VERIFY)
def test_smartnic_service_killed_mid_batch(
    killed_service: tuple[offload.Backend, Callable[[], None]], verify: str, fallback: bool
) -> None:
    be, kill = killed_service
    rt = offload.Runtime(backends=[be, "cpu"], verify=verify, fallback=fallback, rng_seed=1)
    try:
        with _background(kill):
            if fallback:
                out = rt.xxh64(KEYS, seed=5)
            else:
                with pytest.raises(BackendError) as ei:
                    rt.xxh64(KEYS, seed=5)
        if fallback:
            _check_complete(rt, out, "smartnic", verify)
            assert rt.stats()["by_backend"]["smartnic"]["records"] > 0  # the kill was mid-batch
        else:
            _check_strict(rt, ei.value, "smartnic", verify)
            assert ei.value.completed > 0
    finally:
        rt.close()
