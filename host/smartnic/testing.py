"""Run ``offload serve`` as a child process (tests, benchmarks, notebooks), or in this process.

``with ServerProcess(backend="cpu") as srv: SmartNicBackend(srv.address)`` starts the service on an
ephemeral loopback port, waits until it listens and always stops it (SIGTERM, then SIGKILL).
``InProcessService`` runs the same service on a thread of this process, so it sees what this
process registered (a test's throwaway operator).
"""

from __future__ import annotations

import asyncio
import atexit
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

__all__ = ["ServerProcess", "InProcessService"]


class ServerProcess:
    def __init__(
        self,
        *args: str,
        backend: str = "cpu",
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        netns: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.args = list(args)
        self.backend = backend
        self.host = host
        self.env = env
        self.netns = netns
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="offload-serve-")
        self.log_path = os.path.join(self._dir.name, "server.log")
        self._port_file = os.path.join(self._dir.name, "port")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "offload.host.smartnic.server",
            "--host",
            self.host,
            "--port",
            "0",
            "--backend",
            self.backend,
            "--port-file",
            self._port_file,
            *self.args,
        ]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        env = dict(os.environ)
        env.pop("OFFLOAD_SMARTNIC", None)
        env.update(self.env or {})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, stdin=subprocess.DEVNULL
            )
        atexit.register(self.stop)  # never leave a service behind, even if the caller forgets
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if os.path.exists(self._port_file):
                with open(self._port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"offload serve exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"offload serve did not start in {self.startup_timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and (name is None or rec.get("event") == name):
                out.append(rec)
        return out

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL (a crash): no drain, no goodbye."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the exit code (0 after a graceful drain)."""
        assert self.proc is not None
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        atexit.unregister(self.stop)
        self._dir.cleanup()

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessService:
    """``offload serve`` on a thread of this process: ``with InProcessService() as svc:
    SmartNicBackend(svc.address)``. ``config`` are :class:`~.service.ServeConfig` fields."""

    def __init__(self, *, backend: str = "cpu", startup_timeout: float = 60.0, **config: Any) -> None:
        from .service import Logger, ServeConfig, Service

        self.logs = io.StringIO()
        cfg = ServeConfig(port=0, backend=backend, **config)
        self.service = Service(cfg, Logger(cfg.log_level, self.logs))
        self.startup_timeout = startup_timeout
        self.exit_code: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="offload-serve-test", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.service.port}"

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self.exit_code = self._loop.run_until_complete(self.service.run())
        finally:
            self._loop.close()

    def start(self) -> InProcessService:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while self.service.port is None:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the in-process service did not start:\n{self.logs.getvalue()}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Drain and stop, as on SIGTERM."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.service.stop)
            self._thread.join(30)

    def __enter__(self) -> InProcessService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
