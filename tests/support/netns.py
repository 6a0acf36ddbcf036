"""Simulated hosts for multi-host tests: Linux network namespaces joined to this one by veth pairs.

Each `Host` is a namespace with its own network stack and one link (a veth pair on a private
/30) to the test's namespace, where a forwarder on the link's address carries its Postgres
traffic to the real server. A process started with `Host.command` sees only that link, so
`Host.cut()` (the link goes down: packets are dropped, nothing is reset, exactly as a pulled
cable) partitions that host and nothing else, and `Host.heal()` brings the link back with its
TCP connections still open.

Creating namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the `ip` tool;
`unavailable()` says why when the machine cannot.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.support.proxy import PartitionProxy

_SUBNET = "10.231"  # 10.231.<host>.0/30: private, far from the usual Docker/VPN ranges


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"jqprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` failed: {exc.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


class Host:
    """One namespace, its link to the test's namespace, and a forwarder to Postgres on it."""

    def __init__(self, index: int, db_url: str):
        tag = f"{os.getpid() % 100000}"
        self.name = f"jq{tag}h{index}"  # interface names are limited to 15 characters
        self.link = f"jq{tag}v{index}"
        self.address = f"{_SUBNET}.{index}.1"  # the test's end of the link
        self._proxy: PartitionProxy | None = None
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0",
                "netns", self.name)
            _ip("addr", "add", f"{self.address}/30", "dev", self.link)
            _ip("link", "set", self.link, "up")
            inside = ("netns", "exec", self.name, "ip")
            _ip(*inside, "addr", "add", f"{_SUBNET}.{index}.2/30", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")
            _ip(*inside, "link", "set", "lo", "up")
            self._proxy = PartitionProxy(db_url, bind=self.address)
        except BaseException:
            self.destroy()
            raise
        self.db_url = self._proxy.url  # Postgres as this host reaches it: over its link

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        _ip("link", "set", self.link, "down")

    def heal(self) -> None:
        _ip("link", "set", self.link, "up")

    def destroy(self) -> None:
        if self._proxy is not None:
            self._proxy.heal()  # closes the forwarder and every connection through it
        subprocess.run(["ip", "link", "del", self.link], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
