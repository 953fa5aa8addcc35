"""The SmartNIC client's shared state: a pool of authenticated connections and its counters.

Both are used by every :class:`~.pipeline.ChunkPipeline` of one :class:`~.backend.SmartNicBackend`
(one per concurrent caller), so each holds its own lock.
"""

from __future__ import annotations

import threading
from typing import Any

from .client import Connection

__all__ = ["ConnectionPool", "Counters"]


class ConnectionPool:
    """Idle authenticated connections to one service (at most ``size`` kept)."""

    def __init__(self, host: str, port: int, token: bytes | None, size: int) -> None:
        self.host, self.port, self.token, self.size = host, port, token, size
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self.connects = 0

    def acquire(self, timeout: float, fresh: bool = False) -> Connection:
        """An idle connection that still works, or a new one (``fresh``: drop the idle ones
        first, after a link was lost they may be dead too)."""
        with self._lock:
            stale, self._idle = (self._idle, []) if fresh else ([], self._idle)
            conn = None
            while self._idle:
                c = self._idle.pop()
                if c.idle_ok():
                    conn = c
                    break
                stale.append(c)
        for c in stale:
            c.close()
        if conn is not None:
            return conn
        conn = Connection(self.host, self.port, token=self.token, connect_timeout=timeout)
        with self._lock:
            self.connects += 1
        return conn

    def release(self, conn: Connection) -> None:
        """Keep ``conn`` for reuse when nothing unanswered is left on it, else close it."""
        if conn.closed or conn.inbox or conn.at_eof:
            conn.close()
            return
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


class Counters:
    """What a backend sent and received: batches, chunks, records, bytes, reconnects, failures
    by cause and records by the service-side backend that ran them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c: dict[str, Any] = {
            "batches": 0,
            "chunks": 0,
            "records": 0,
            "bytes_sent": 0,
            "bytes_received": 0,
            "reconnects": 0,
            "failures": {},
            "server_backends": {},
        }

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                self._c[k] += v

    def failure(self, cause: str) -> None:
        with self._lock:
            f = self._c["failures"]
            f[cause] = f.get(cause, 0) + 1

    def answered(self, records: int, backend: str) -> None:
        """One chunk of ``records`` came back, run by ``backend`` on the service."""
        with self._lock:
            c = self._c
            c["chunks"] += 1
            c["records"] += records
            c["server_backends"][backend] = c["server_backends"].get(backend, 0) + records

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            s = dict(self._c)
            s["failures"] = dict(s["failures"])
            s["server_backends"] = dict(s["server_backends"])
            return s
