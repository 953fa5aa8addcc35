"""``offload serve``: the SmartNIC service's command line (protocol: ``docs/smartnic_protocol.md``).

Arguments and environment to a :class:`~.service.ServeConfig`, then the service
(:mod:`.service`: event loop, limits, watchdog; :mod:`.connection`: one peer's state machine) on
uvloop's event loop when uvloop is installed (optional), asyncio's otherwise;
``OFFLOAD_SERVE_LOOP=asyncio`` forces asyncio's.

Run: ``python -m offload.host.smartnic.server --port 0`` (or ``offload serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from .service import CHAINS, LEVELS, Logger, ServeConfig, Service, is_loopback, read_token

__all__ = [
    "ServeConfig",
    "Service",
    "main",
    "build_parser",
    "config_from_args",
    "is_loopback",
    "read_token",
    "run_loop",
    "event_loop_factory",
]


def _env(name: str, default: Any) -> Any:
    v = os.environ.get(name)
    return default if v in (None, "") else v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="offload serve",
        description="Run the offload SmartNIC service: execute batches sent by SmartNicBackend "
        "clients on a local backend chain (docs/smartnic_protocol.md).",
    )
    p.add_argument(
        "--host",
        default=_env("OFFLOAD_SERVE_HOST", "127.0.0.1"),
        help="address to bind (default 127.0.0.1; env OFFLOAD_SERVE_HOST). A "
        "non-loopback address requires --token-file.",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(_env("OFFLOAD_SERVE_PORT", 7878)),
        help="TCP port (default 7878, 0 = ephemeral; env OFFLOAD_SERVE_PORT)",
    )
    p.add_argument(
        "--backend",
        choices=sorted(CHAINS),
        default=_env("OFFLOAD_SERVE_BACKEND", "auto"),
        help="local backend: auto (fpga if available, else cpu), cpu, sim or fpga; "
        "cpu is always the fallback (env OFFLOAD_SERVE_BACKEND)",
    )
    p.add_argument(
        "--token-file",
        default=_env("OFFLOAD_SERVE_TOKEN_FILE", None),
        help="file holding the shared secret; clients must answer the HMAC-SHA256 "
        "challenge with it (env OFFLOAD_SERVE_TOKEN_FILE)",
    )
    p.add_argument(
        "--max-frame-mb",
        type=float,
        default=float(_env("OFFLOAD_SERVE_MAX_FRAME_MB", 256)),
        help="largest accepted frame in MiB (default 256)",
    )
    p.add_argument(
        "--max-inflight-mb",
        type=float,
        default=float(_env("OFFLOAD_SERVE_MAX_INFLIGHT_MB", 512)),
        help="per connection: stop reading while queued request bytes exceed this",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds to finish in-flight batches after SIGTERM (default 30)",
    )
    p.add_argument(
        "--frame-timeout",
        type=float,
        default=float(_env("OFFLOAD_SERVE_FRAME_TIMEOUT", 30.0)),
        help="close a connection stalled mid-frame or unauthenticated this long (s)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=int(_env("OFFLOAD_SERVE_MAX_CONNECTIONS", 256)),
        help="connections served at a time (default 256; env "
        "OFFLOAD_SERVE_MAX_CONNECTIONS); one more gets an ERROR saying so and "
        "is closed",
    )
    p.add_argument("--workers", type=int, default=0, help="executor threads (default min(4, cpus))")
    p.add_argument(
        "--log-level",
        choices=sorted(LEVELS, key=LEVELS.__getitem__),
        default=_env("OFFLOAD_SERVE_LOG_LEVEL", "info"),
    )
    p.add_argument("--no-warmup", action="store_true", help="do not run every operator once before listening")
    p.add_argument("--port-file", default=None, help="write the bound port to this file once listening")
    p.add_argument(
        "--debug-delay-ms",
        type=float,
        default=float(_env("OFFLOAD_SERVE_DEBUG_DELAY_MS", 0)),
        help=argparse.SUPPRESS,
    )  # test only: sleep before each batch
    return p


def config_from_args(argv: list[str] | None) -> ServeConfig:
    a = build_parser().parse_args(argv)
    token = None
    if a.token_file:
        token = read_token(a.token_file)
    if not (0 <= a.port <= 65535):
        raise ValueError(f"--port must be in [0, 65535], got {a.port}")
    if not a.frame_timeout > 0:
        raise ValueError(f"--frame-timeout must be > 0, got {a.frame_timeout}")
    if a.max_connections < 1:
        raise ValueError(f"--max-connections must be >= 1, got {a.max_connections}")
    return ServeConfig(
        host=a.host,
        port=a.port,
        backend=a.backend,
        token=token,
        max_frame=int(a.max_frame_mb * (1 << 20)),
        max_inflight=int(a.max_inflight_mb * (1 << 20)),
        delay_ms=a.debug_delay_ms,
        drain_timeout=a.drain_timeout,
        workers=a.workers,
        log_level=a.log_level,
        port_file=a.port_file,
        warmup=not a.no_warmup,
        frame_timeout=a.frame_timeout,
        max_connections=a.max_connections,
    )


def event_loop_factory() -> Any:
    """uvloop's event loop when it is installed (a faster loop: lower per-request latency), else
    None (asyncio's own). ``OFFLOAD_SERVE_LOOP=asyncio`` forces the pure-asyncio loop."""
    if os.environ.get("OFFLOAD_SERVE_LOOP", "auto").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_loop(coro: Any) -> Any:
    """Run ``coro`` to completion on the service's event loop (see :func:`event_loop_factory`)."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> int:
    """``offload serve [--host H] [--port P] [--backend B] [--token-file F]``; returns the exit code."""
    log = Logger("info")
    try:
        cfg = config_from_args(argv)
    except (OSError, ValueError) as e:
        log("error", "bad_config", error=str(e))
        print(f"offload serve: {e}", file=sys.stderr)
        return 2
    log = Logger(cfg.log_level)
    if not is_loopback(cfg.host) and cfg.token is None:
        msg = (
            f"refusing to listen on non-loopback address {cfg.host!r} without authentication: "
            "pass --token-file PATH (or OFFLOAD_SERVE_TOKEN_FILE)"
        )
        log("error", "refused", error=msg)
        print(f"offload serve: {msg}", file=sys.stderr)
        return 2
    svc = Service(cfg, log)
    try:
        return run_loop(svc.run())
    except OSError as e:
        log("error", "listen_failed", host=cfg.host, port=cfg.port, error=str(e))
        print(f"offload serve: cannot listen on {cfg.host}:{cfg.port}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
