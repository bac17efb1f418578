"""Hosts as Linux network namespaces on one machine: each has its own loopback and one address on a shared
bridge (itself in a namespace of its own), so a process that assumes another's address — `127.0.0.1` for a
service that runs elsewhere — fails here as it would across machines. The test process joins the bridge
with one address, like a client network. Everything is removed at the end, whatever happened."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from api.launcher import wait_for
from api.paths import ROOT

PREFIX = "ytmh"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class Host:
    name: str
    namespace: str
    address: str


@dataclass
class Network:
    """A bridge, hosts on it, and the processes started on them (stopped and removed by `close`)."""

    tag: str
    subnet: str  # "10.a.b"
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="yt-multihost-")))
    scratch: list[Path] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{PREFIX}{self.tag}sw"

    def _veth(self, n: int) -> tuple[str, str]:
        return f"v{self.tag}{n}a", f"v{self.tag}{n}b"

    def create(self) -> None:
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        # The test process's own leg on the bridge (the "client network").
        inside, outside = self._veth(0)
        ip("link", "add", inside, "type", "veth", "peer", "name", outside)
        ip("link", "set", outside, "netns", self.switch)
        ip("-n", self.switch, "link", "set", outside, "master", "br0", "up")
        ip("addr", "add", f"{self.subnet}.100/24", "dev", inside)
        ip("link", "set", inside, "up")

    def add_host(self, name: str) -> Host:
        n = len(self.hosts) + 1
        namespace = f"{PREFIX}{self.tag}{name}"
        address = f"{self.subnet}.{n + 1}"
        inside, outside = self._veth(n)
        ip("netns", "add", namespace)
        ip("link", "add", inside, "type", "veth", "peer", "name", outside)
        ip("link", "set", inside, "netns", namespace)
        ip("link", "set", outside, "netns", self.switch)
        ip("-n", self.switch, "link", "set", outside, "master", "br0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
        ip("-n", namespace, "link", "set", inside, "up")
        host = Host(name, namespace, address)
        self.hosts[name] = host
        return host

    def start(self, host: Host, label: str, command: list[str], env: dict[str, str], *, user: str | None = None):
        """A process on `host` (its own session, so it is stopped with its children)."""
        prefix = ["ip", "netns", "exec", host.namespace]
        if user:
            prefix += ["runuser", "-u", user, "--"]
        log = (self.logs / f"{host.name}-{label}.log").open("w")
        process = subprocess.Popen(
            [*prefix, *command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append((f"{host.name}/{label}", process))
        return process

    def kill(self, process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self, label: str, chars: int = 3000) -> str:
        path = self.logs / f"{label}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def close(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                self.kill(process, signal.SIGTERM)
        for host in self.hosts.values():
            ip("netns", "del", host.namespace, check=False)
        ip("link", "del", self._veth(0)[0], check=False)
        ip("netns", "del", self.switch, check=False)
        for path in [*self.scratch, self.logs]:
            shutil.rmtree(path, ignore_errors=True)


def _remove_leftovers() -> None:
    """Namespaces and links of an earlier run that died before its clean-up."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            ip("netns", "del", name, check=False)


@pytest.fixture
def network():
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2): network namespaces unavailable")
    probe = f"{PREFIX}probe{secrets.token_hex(2)}"
    tried = ip("netns", "add", probe, check=False)
    if tried.returncode != 0:
        pytest.skip(f"network namespaces unavailable here (needs root / CAP_SYS_ADMIN): {tried.stderr.strip()}")
    ip("netns", "del", probe, check=False)
    _remove_leftovers()
    tag = secrets.token_hex(2)
    net = Network(tag=tag, subnet=f"10.{int(tag[:2], 16) % 200 + 20}.{int(tag[2:], 16)}")
    try:
        net.create()
        yield net
    finally:
        net.close()


def wait_ready(url: str, timeout_s: float, what: str, net: Network, label: str) -> None:
    if not wait_for(url, timeout_s):
        raise AssertionError(f"{what} at {url} not ready in {timeout_s:.0f} s:\n{net.log_tail(label)}")


def postgres_on(net: Network, host: Host) -> str:
    """A throwaway PostgreSQL cluster listening on the host's address only."""
    data = Path(tempfile.mkdtemp(prefix="yt-mh-pg-", dir="/tmp"))  # postgres can't reach pytest's 0700 tmp
    net.scratch.append(data)
    shutil.chown(data, "postgres", "postgres")
    initdb = shutil.which("initdb") or "/usr/local/bin/initdb"
    postgres = shutil.which("postgres") or str(Path(initdb).parent / "postgres")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", initdb, "-D", str(data / "db"), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    with (data / "db" / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {net.subnet}.0/24 trust\n")
    net.start(
        host,
        "postgres",
        [postgres, "-D", str(data / "db"), "-h", host.address, "-p", "5432", "-k", str(data)],
        dict(os.environ),
        user="postgres",
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = subprocess.run(
            ["ip", "netns", "exec", host.namespace, shutil.which("pg_isready") or "pg_isready", "-h", host.address],
            capture_output=True,
        )
        if ready.returncode == 0:
            return f"postgresql://postgres@{host.address}:5432/postgres"
        time.sleep(0.5)
    raise AssertionError("PostgreSQL did not start on the data host:\n" + net.log_tail(f"{host.name}-postgres"))
