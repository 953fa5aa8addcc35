"""Run ``offload serve`` as a child process (tests, benchmarks, notebooks).

``with ServerProcess(backend="cpu") as srv: SmartNicBackend(srv.address)`` starts the service on an
ephemeral loopback port, waits until it listens and always stops it (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

__all__ = ["ServerProcess"]


class ServerProcess:
    def __init__(self, *args: str, backend: str = "cpu", host: str = "127.0.0.1",
                 env: dict[str, str] | None = None, netns: str | None = None,
                 startup_timeout: float = 60.0) -> None:
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
        cmd = [sys.executable, "-m", "offload.host.smartnic.server", "--host", self.host,
               "--port", "0", "--backend", self.backend, "--port-file", self._port_file, *self.args]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        env = dict(os.environ)
        env.pop("OFFLOAD_SMARTNIC", None)
        env.update(self.env or {})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env,
                                         stdin=subprocess.DEVNULL)
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
