"""One network namespace per pod on a private bridge, as a node's CNI plugin would give.

Ray binds some ports on every address (GCS, metrics, the dashboard agent), so pods that share
the host's network would collide; each local pod therefore gets its own namespace and address.
Addresses come from a /24 of 10.250.0.0/16 picked free for this runner; nothing leaves the bridge.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _used_subnets() -> set[str]:
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    used = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1]
            used.add(str(ipaddress.ip_interface(addr).network))
    return used


# Which process owns each runner's bridge, so a runner killed without cleaning up is found later.
OWNERS = Path("/run/ray-operator-netns")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans() -> None:
    """Delete the namespaces and bridges of runners whose process is gone."""
    if not OWNERS.is_dir():
        return
    netns = _ip("netns", "list", check=False).stdout.split()
    for owner in OWNERS.iterdir():
        try:
            pid = int(owner.read_text())
        except ValueError:
            pid = 0
        if pid and _alive(pid):
            continue
        for name in netns:
            if name.startswith(f"rp{owner.name}-"):
                pids = _ip("netns", "pids", name, check=False).stdout.split()
                if pids:
                    subprocess.run(["kill", "-9", *pids], capture_output=True, check=False)
                _ip("netns", "del", name, check=False)
        _ip("link", "del", f"rb{owner.name}", check=False)
        owner.unlink(missing_ok=True)


@dataclass
class PodNetwork:
    """A bridge with one /24, and a namespace + veth per pod."""

    runner_id: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: ipaddress.IPv4Network | None = None
    _next: int = 2
    _free: list[int] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        """The bridge's interface name (at most 15 characters)."""
        return f"rb{self.runner_id}"

    def up(self) -> None:
        """Create the bridge on a /24 nobody uses (after removing those of dead runners)."""
        remove_orphans()
        OWNERS.mkdir(parents=True, exist_ok=True)
        (OWNERS / self.runner_id).write_text(str(os.getpid()))
        used = _used_subnets()
        for third in range(secrets.randbelow(200), 256):
            candidate = ipaddress.IPv4Network(f"10.250.{third}.0/24")
            if str(candidate) not in used:
                self.subnet = candidate
                break
        if self.subnet is None:
            raise RuntimeError("no free /24 in 10.250.0.0/16 for local pods")
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet[1]}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def down(self) -> None:
        """Remove every namespace of this runner that is left, then the bridge."""
        for name in _ip("netns", "list", check=False).stdout.split():
            if name.startswith(f"rp{self.runner_id}-"):
                self.remove_pod(name)
        _ip("link", "del", self.bridge, check=False)
        (OWNERS / self.runner_id).unlink(missing_ok=True)

    def add_pod(self) -> tuple[str, str]:
        """A new namespace with an address on the bridge: returns (namespace name, IP)."""
        assert self.subnet is not None, "call up() first"
        index = self._free.pop() if self._free else self._next
        if index == self._next:
            self._next += 1
        if index > 254:
            raise RuntimeError(f"more than 253 local pods on {self.subnet}")
        netns = f"rp{self.runner_id}-{index}"
        veth = f"rv{self.runner_id}{index}"
        address = str(self.subnet[index])
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", str(self.subnet[1]))
        return netns, address

    def remove_pod(self, netns: str) -> None:
        """Kill what still runs in the namespace and delete it (its veth goes with it)."""
        pids = _ip("netns", "pids", netns, check=False).stdout.split()
        if pids:
            subprocess.run(["kill", "-9", *pids], capture_output=True, check=False)
        _ip("netns", "del", netns, check=False)
        index = int(netns.rsplit("-", 1)[1])
        # A killed process can hold the namespace (and so the veth's peer) a little longer
        # than "netns del" takes: the index would then be reused while its veth name is still
        # taken. Deleting our end removes the pair at once.
        _ip("link", "del", f"rv{self.runner_id}{index}", check=False)
        self._free.append(index)
