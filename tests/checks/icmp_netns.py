"""Network namespaces for the ICMP tests, so no probe ever leaves this machine.

A test that needs a dead host, a router or different ICMP permissions builds
them inside namespaces it creates and deletes, and runs kanshi there in a
child process (``ip netns exec NS python -c …``, JSON in on stdin, out on stdout).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import needs

REPO = Path(__file__).resolve().parents[2]
_NAMES = itertools.count()

#: Sweeps in the namespace with the engine and prints what it saw.
SWEEP = """
import json, logging, sys, time
from checks.icmp import IcmpEngine
log = []
class Keep(logging.Handler):
    def emit(self, record):
        log.append(f"{record.levelname} {record.getMessage()}")
logging.getLogger("checks").addHandler(Keep())
logging.getLogger("checks").setLevel(logging.INFO)
args = json.load(sys.stdin)
engine = IcmpEngine(method=args.get("method", "auto"), max_pps=args.get("max_pps", 0))
started = time.monotonic()
stats = engine.ping_sync(args["targets"], count=args.get("count", 1),
                         interval=args.get("interval", 0.2), timeout=args.get("timeout", 1.0))
print(json.dumps({"method": engine.method, "reason": engine.reason, "log": log,
                  "elapsed": time.monotonic() - started,
                  "stats": {k: v._asdict() for k, v in stats.items()}}))
engine.close()
"""

#: Runs a PingCheck in the namespace and prints its results.
CHECK = """
import json, sys
from agent.clock import SystemClock
from checks.base import CheckContext, LocalResources
from checks.ping import PingCheck
shared = LocalResources()
config = PingCheck.Config.model_validate(json.load(sys.stdin))
check = PingCheck("ping", config, timeout=30.0,
                  context=CheckContext(clock=SystemClock(), shared=shared))
print(json.dumps([{"status": r.status.name, "message": r.message, "target": r.target,
                   "metrics": r.metrics} for r in check.execute()]))
shared.close()
"""

#: Drops CAP_NET_RAW for the child (bounding and inheritable sets), as in a container.
WITHOUT_NET_RAW = ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", "--"]


class Netns:
    """One network namespace with its loopback up."""

    def __init__(self, name: str) -> None:
        self.name = name

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True)

    def sysctl(self, setting: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, "sysctl", "-q", "-w", setting],
                       check=True, capture_output=True)

    def python(self, code: str, argument: Any, *, drop_net_raw: bool = False,
               timeout: float = 60.0) -> Any:
        """Run ``code`` with ``argument`` as JSON on stdin; its stdout parsed as JSON."""
        argv = ["ip", "netns", "exec", self.name,
                *(WITHOUT_NET_RAW if drop_net_raw else []), sys.executable, "-c", code]
        proc = subprocess.run(argv, input=json.dumps(argument), capture_output=True,
                              text=True, timeout=timeout, cwd=REPO, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"child in netns {self.name} failed:\n{proc.stderr}")
        return json.loads(proc.stdout)

    def sweep(self, targets: list[str], *, drop_net_raw: bool = False,
              **options: Any) -> Any:
        """Sweep ``targets`` from inside the namespace (options as for ``ping_sync``)."""
        return self.python(SWEEP, {"targets": targets, **options}, drop_net_raw=drop_net_raw)

    def black_hole(self, address: str) -> None:
        """An interface owning ``address`` (a /24) that silently drops what is sent to it.

        A ``dummy`` link where the kernel has the driver; otherwise a veth pair with
        ARP off, whose peer discards frames addressed to another MAC.
        """
        try:
            self.ip("link", "add", "hole0", "type", "dummy")
        except subprocess.CalledProcessError:
            self.ip("link", "add", "hole0", "type", "veth", "peer", "name", "hole1")
            self.ip("link", "set", "hole0", "arp", "off")
            self.ip("link", "set", "hole1", "up")
        self.ip("addr", "add", f"{address}/24", "dev", "hole0")
        self.ip("link", "set", "hole0", "up")


@contextlib.contextmanager
def namespace() -> Iterator[Netns]:
    """A fresh namespace, deleted afterwards whatever happens."""
    ns = Netns(f"kanshi-t{os.getpid()}-{next(_NAMES)}")
    subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True)
    try:
        ns.ip("link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns.name], check=False, capture_output=True)


def connect_router(host: Netns, router: Netns, *, unreachable: str) -> None:
    """``router`` forwards for ``host`` and answers "host unreachable" for ``unreachable``.

    host 10.199.1.2/24 ── veth ── 10.199.1.1/24 router (ip_forward, unreachable route)
    """
    host.ip("link", "add", "up0", "type", "veth", "peer", "name", "down0", "netns",
            router.name)
    host.ip("addr", "add", "10.199.1.2/24", "dev", "up0")
    host.ip("link", "set", "up0", "up")
    host.ip("route", "add", unreachable, "via", "10.199.1.1")
    router.ip("addr", "add", "10.199.1.1/24", "dev", "down0")
    router.ip("link", "set", "down0", "up")
    router.sysctl("net.ipv4.ip_forward=1")
    router.ip("route", "add", "unreachable", unreachable)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh namespace of the test's own (root and iproute2 needed, else skip)."""
    needs.root()
    needs.command("ip", "iproute2")
    with namespace() as ns:
        yield ns
