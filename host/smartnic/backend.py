"""``SmartNicBackend``: run batches on an ``offload serve`` service over TCP.

The backend holds the configuration, a pool of authenticated connections and counters; each call
is one :class:`~.pipeline.ChunkPipeline`: the batch is split into chunks of whole records
(``batch.slice``), each sent as one REQUEST frame carrying the call and the chunk's own buffers
(:mod:`.codec`); up to ``window`` chunks are in flight on one pooled connection and results come
back in order. When the link drops the pipeline reconnects (exponential backoff, ``retries``
times) and resends only the chunks not yet answered; when it gives up, or a chunk misses its
deadline, it raises :class:`~offload.backend.BackendError` with ``completed``/``partial`` covering
exactly the leading chunks that were answered, so the runtime recomputes the rest elsewhere: no
record is lost or duplicated.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from offload.backend import Availability, Backend, BackendError, Batch, Capabilities, Result, empty_result
from offload.ops import REGISTRY, OpCall

from ..deadline import DeadlineEstimator
from .client import Connection, ConnectionLost, DeadlineExceeded, parse_address
from .pipeline import ChunkPipeline
from .pool import ConnectionPool, Counters
from .protocol import ErrorCode, ProtocolError, RemoteError

__all__ = ["SmartNicBackend"]

ENV_ADDRESS = "OFFLOAD_SMARTNIC"
ENV_TOKEN = "OFFLOAD_SMARTNIC_TOKEN"
ENV_TOKEN_FILE = "OFFLOAD_SMARTNIC_TOKEN_FILE"


class SmartNicBackend(Backend):
    """Backend ``"smartnic"``.

    ``address``: ``"host:port"`` of ``offload serve`` (default: ``OFFLOAD_SMARTNIC``).
    ``token``/``token_file``: the shared secret (default: ``OFFLOAD_SMARTNIC_TOKEN`` or
    ``OFFLOAD_SMARTNIC_TOKEN_FILE``). ``timeout``: a fixed number of seconds a chunk may take from
    its turn (it started to go out, or the answer before it came in) until its result is in; by
    default (None) each chunk's deadline scales with its size and the rate measured on the chunks
    before it (``deadlines``, :mod:`offload.host.deadline`). ``chunk_bytes``: input bytes per
    request; ``window``: requests in flight; ``pool_size``: idle connections kept;
    ``retries``/``backoff``: reconnects after a dropped link (``backoff * 2**k`` seconds before
    attempt k+1).
    """

    name = "smartnic"

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | bytes | None = None,
        token_file: str | None = None,
        timeout: float | None = None,
        connect_timeout: float = 2.0,
        health_timeout: float = 1.0,
        chunk_bytes: int = 4 << 20,
        window: int = 4,
        pool_size: int = 4,
        retries: int = 2,
        backoff: float = 0.05,
        availability_ttl: float = 1.0,
        **_ignored: Any,
    ) -> None:
        self.address = address if address is not None else os.environ.get(ENV_ADDRESS) or None
        self._config_error: str | None = None
        self.host, self.port = "", 0
        if self.address:
            try:
                self.host, self.port = parse_address(self.address)
            except ValueError as e:
                self._config_error = str(e)
        if token is None and token_file is None:
            token = os.environ.get(ENV_TOKEN) or None
            token_file = os.environ.get(ENV_TOKEN_FILE) or None
        if token is None and token_file:
            try:
                with open(token_file, "rb") as f:
                    token = f.read().strip()
            except OSError as e:
                self._config_error = f"cannot read token file {token_file}: {e}"
        self.token: bytes | None = token.encode() if isinstance(token, str) else token
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds (or None: scaled to each chunk), got {timeout}")
        self.timeout = None if timeout is None else float(timeout)
        self.deadlines: DeadlineEstimator | None = None  # made on the first connection
        self.connect_timeout = float(connect_timeout)
        self.health_timeout = float(health_timeout)
        self.chunk_bytes = max(8, int(chunk_bytes))
        self.window = max(1, int(window))
        self.pool_size = max(0, int(pool_size))
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.availability_ttl = float(availability_ttl)
        self._lock = threading.Lock()
        self._avail: tuple[float, Availability] | None = None
        # the operators the service announced in its health record (None: not asked yet)
        self._service_ops: frozenset[str] | None = None
        self.pool = ConnectionPool(self.host, self.port, self.token, self.pool_size)
        self.counters = Counters()

    # -- Backend interface --------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        """The operators both sides know: a service from another build, or one that did not see
        an operator registered in this process, is not sent that operator."""
        ours = frozenset(REGISTRY)
        return Capabilities(ops=ours if self._service_ops is None else ours & self._service_ops)

    def availability(self) -> Availability:
        if self._config_error:
            return Availability(False, self._config_error)
        if not self.address:
            return Availability(
                False, f"no SmartNIC service configured: pass address='host:port' or set {ENV_ADDRESS}"
            )
        now = time.monotonic()
        cached = self._avail
        if cached is not None and now - cached[0] < self.availability_ttl:
            return cached[1]
        try:
            h = self.health()
            if isinstance(h.get("ops"), list):
                self._service_ops = frozenset(str(op) for op in h["ops"])
            if h.get("status") != "ok":
                av = Availability(False, f"SmartNIC service at {self.address} is {h.get('status')}")
            else:
                av = Availability(
                    True,
                    f"offload serve at {self.address} (backends: {', '.join(h.get('chain', [])) or '?'})",
                )
        except RemoteError as e:
            if e.code == ErrorCode.AUTH_FAILED:
                av = Availability(
                    False,
                    f"SmartNIC service at {self.address} refused the "
                    f"credential ({'no token set: ' + ENV_TOKEN if self.token is None else 'wrong token'})",
                )
            else:
                av = Availability(False, f"SmartNIC service at {self.address}: {e}")
        except (OSError, ProtocolError, ConnectionLost, DeadlineExceeded) as e:
            av = Availability(
                False, f"cannot reach SmartNIC service at {self.address}: {type(e).__name__}: {e}"
            )
        self._avail = (now, av)
        return av

    def run(self, call: OpCall, batch: Batch) -> Result:
        if batch.n == 0:
            return empty_result(call.op)
        if self._config_error or not self.address:
            raise BackendError(self.availability().reason, cause="unavailable")
        try:
            return ChunkPipeline(self, call, batch).run()
        except BackendError:
            self._avail = None  # the next availability check asks the service again
            raise

    def estimator(self, conn: Connection) -> DeadlineEstimator:
        """The chunk deadlines' estimator, made on the first connection: its prior (before any
        chunk is measured) fits the service's chain, from HELLO. A CPU chain: 2 s + 10 MB/s
        (a 100 Mbit/s link); a device, or a chain not told: the simulated device's ~20 k words/s
        (the old fixed 30 s for a 4 MiB chunk)."""
        with self._lock:
            if self.deadlines is None:
                cpu_only = conn.server.get("chain") == ["cpu"]
                self.deadlines = DeadlineEstimator(
                    prior_fixed_s=2.0 if cpu_only else 10.0,
                    prior_byte_s=1e-7 if cpu_only else 5e-5 / 8,
                    latency_s=0.05,
                    floor_s=1.0,
                    margin=4.0,
                )
            return self.deadlines

    def stats(self) -> dict[str, Any]:
        s = self.counters.snapshot()
        s["connects"] = self.pool.connects
        return s

    def health(self) -> dict[str, Any]:
        """The service's health record (raises on failure)."""
        conn = self.pool.acquire(self.health_timeout)
        try:
            h = conn.health(self.health_timeout)
        except BaseException:
            conn.close()
            raise
        self.pool.release(conn)
        return h

    def close(self) -> None:
        self.pool.close()

    def __repr__(self) -> str:
        return f"SmartNicBackend({self.address!r})"
