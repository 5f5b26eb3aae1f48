"""A local Ray cluster (``--executor ray`` without ``--address``) exists for one command: it
must not be reachable from the network (issue 24, item 6). Checked on the started node's
address and on every listening TCP socket of the processes it started (/proc/net/tcp{,6})."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest


def _descendants(root: int) -> set[int]:
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in found}
        found |= frontier
    return found


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return inodes


def _address(hexaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])  # /proc/net/tcp: little-endian words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return ipaddress.IPv6Address(words)


def listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes = _socket_inodes(pids)
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: TCP_LISTEN
                host, port = f[1].split(":")
                out.append((str(_address(host)), int(port, 16)))
    return out


def _loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_the_proc_reader_sees_a_socket_listening_on_every_interface():
    import socket

    with socket.socket() as s:  # the check must be able to fail: 0.0.0.0 is seen as not loopback
        s.bind(("0.0.0.0", 0))
        s.listen()
        mine = listening({os.getpid()})
        assert (("0.0.0.0", s.getsockname()[1]) in mine) and not _loopback("0.0.0.0") and _loopback("::ffff:127.0.0.1")


@pytest.mark.slow
def test_a_local_ray_cluster_listens_on_loopback_only(tmp_path):
    ray = pytest.importorskip("ray")
    from resgrad.cli._executor import build_executor

    assert not ray.is_initialized()
    var = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    before = os.environ.get(var)
    ex = build_executor("ray", workers=None, threads=1, address=None, num_cpus=None, num_gpus=0, partition=None,
                        time=None, gpus_per_task=0, cluster=None, folder=tmp_path)
    try:
        assert os.environ.get(var) == before  # the switch is restored after the start
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        socks = listening(_descendants(os.getpid()) | {os.getpid()})
        assert len(socks) >= 2, socks  # at least the GCS and the raylet
        exposed = [(a, p) for a, p in socks if not _loopback(a)]
        assert not exposed, f"reachable from the network: {exposed}"
    finally:
        ex.close()
        if ray.is_initialized():
            ray.shutdown()
    assert not ray.is_initialized()
