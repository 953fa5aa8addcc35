"""A local ``offload serve`` for notebooks and experiments: start it, point a runtime at it, stop it.

    from offload.service import LocalService
    with LocalService(backend="cpu") as svc:                  # an ephemeral loopback port
        rt = offload.Runtime(backends=["smartnic", "cpu"], smartnic=svc.address)
        rt.xxh64(keys)

The service is a child process running ``offload serve`` (the same program a DPU runs), so it can
be killed like a crashed DPU (:meth:`LocalService.kill`) or drained gracefully
(:meth:`LocalService.terminate`). It is always stopped when the ``with`` block or the interpreter
ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["LocalService"]


class LocalService:
    """``offload serve --port 0`` as a child process on ``host`` (default loopback).

    ``backend``: the service's own backend chain (``offload serve --backend``: ``"cpu"``,
    ``"sim"``, ``"fpga"``, ``"auto"``). ``options``: further ``offload serve`` flags, e.g.
    ``["--max-frame-mb", "16"]`` (``offload serve --help``); the test suite's ``--debug-*``
    flags are refused.
    """

    def __init__(
        self,
        backend: str = "cpu",
        *,
        options: Sequence[str] = (),
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
    ) -> None:
        from offload.host.smartnic.testing import ServerProcess

        bad = [o for o in options if str(o).startswith("--debug")]
        if bad:
            raise ValueError(f"{bad[0]} is a test-only flag of offload serve, not an option")
        self._proc = ServerProcess(
            *map(str, options), backend=backend, host=host, startup_timeout=startup_timeout
        )

    def start(self) -> LocalService:
        """Start the service and wait until it listens (``RuntimeError`` with its log if not)."""
        if self._proc.proc is None:
            self._proc.start()
        return self

    @property
    def address(self) -> str:
        """``host:port`` to give ``Runtime(smartnic=...)`` or ``SmartNicBackend(...)``."""
        return self._proc.address

    @property
    def pid(self) -> int:
        return self._proc.pid

    def running(self) -> bool:
        return self._proc.running()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The service's JSON log records so far (only those whose ``event`` is ``name``)."""
        return self._proc.events(name)

    def kill(self) -> None:
        """SIGKILL, as when a DPU crashes: no drain, connections are cut mid-batch."""
        self._proc.kill()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM: the service finishes what it received and exits; returns its exit code."""
        return self._proc.terminate(timeout)

    def close(self) -> None:
        """Stop the service if it still runs (SIGTERM, then SIGKILL) and remove its files."""
        self._proc.close()

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
