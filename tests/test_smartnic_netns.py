"""The SmartNIC service across two network namespaces joined by a veth pair (a real link, not
loopback): the host side in one namespace, the service in the other. Needs root and ``ip netns``;
skipped with the reason otherwise. Namespaces, links and addresses are this test's own (10.x
inside the namespaces) and are removed afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from offload.host.smartnic.testing import ServerProcess

pytestmark = pytest.mark.timeout(120)

CLIENT = r"""
import json, sys, numpy as np
from offload.runtime import Runtime
from offload.host.smartnic import SmartNicBackend
addr, token = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(5)
keys = rng.integers(0, 2**63, 300_000, dtype=np.uint64)
strs = [bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 50, 2000)]
nic = Runtime(backends=[SmartNicBackend(addr, token=token, chunk_bytes=256 << 10)], fallback=False)
cpu = Runtime(backends=["cpu"])
ok = bool((nic.xxh64(keys, seed=3) == cpu.xxh64(keys, seed=3)).all()
          and (nic.hash_bucket(strs, 1000) == cpu.hash_bucket(strs, 1000)).all())
wrong = SmartNicBackend(addr, token="wrong").availability()
print(json.dumps({"ok": ok, "by": sorted(nic.stats()["by_backend"]), "wrong_ok": wrong.ok,
                  "wrong_reason": wrong.reason}))
"""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


@pytest.fixture
def netns_pair():
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns)")
    if shutil.which("ip") is None:
        pytest.skip("the ip tool (iproute2) is not installed")
    tag = f"{os.getpid() % 100000}"
    a, b = f"offsn{tag}a", f"offsn{tag}b"
    subnet = f"10.199.{os.getpid() % 250}"
    probe = _ip("netns", "add", a, check=False)
    if probe.returncode != 0:
        pytest.skip(reason=f"ip netns add does not work here: {probe.stderr.strip()}")
    try:
        _ip("netns", "add", b)
        _ip("link", "add", f"vsa{tag}", "type", "veth", "peer", "name", f"vsb{tag}")
        for ns, dev, host in ((a, f"vsa{tag}", 1), (b, f"vsb{tag}", 2)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield a, b, f"{subnet}.1"
    finally:
        for ns in (a, b):
            _ip("netns", "del", ns, check=False)  # removes the veth pair with it


def test_service_across_namespaces(netns_pair, tmp_path):
    ns_server, ns_client, server_ip = netns_pair
    # a non-loopback address without a token is refused
    refused = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns_server,
            sys.executable,
            "-m",
            "offload.host.smartnic.server",
            "--host",
            server_ip,
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "--token-file" in refused.stderr
    tok = tmp_path / "token"
    tok.write_text("netns-secret")
    with ServerProcess("--token-file", str(tok), backend="cpu", host=server_ip, netns=ns_server) as srv:
        out = subprocess.run(
            ["ip", "netns", "exec", ns_client, sys.executable, "-c", CLIENT, srv.address, "netns-secret"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout.strip().splitlines()[-1])
        assert res["ok"] and res["by"] == ["smartnic"]
        assert not res["wrong_ok"] and "wrong token" in res["wrong_reason"]
        # the service is not reachable from the root namespace's loopback
        assert srv.events("listening")[0]["host"] == server_ip
        assert srv.events("auth_refused")
    assert not srv.running()
