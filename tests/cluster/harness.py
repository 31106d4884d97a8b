"""Several hosts on one machine, and the clustered engines micro runs on.

Used by the cluster tests (`tests/cluster`, pytest) and by `bench/registry-etcd`
(through the command line at the end of this file). Standard library only, so
`python3 tests/cluster/harness.py run ...` works without the test venv.

Hosts
-----
Where the machine allows network namespaces (root, `ip netns`), every host is a
network namespace of its own with one veth pair: `eth0` inside, the other end
attached to a bridge in the root namespace that carries a private /24 of
10.0.0.0/8 chosen not to overlap any route of the machine. The namespaces have no
default route and the bridge is attached to nothing but the veths: no NAT, no
forwarding rule, nothing that can reach the machine's real interfaces. IPv6 and
multicast are off on everything the harness creates. The test process itself
(the root namespace) reaches every host through the bridge's address (`.1`).

Where namespaces are not allowed, hosts are distinct loopback addresses
(127.x.y.z) of the one namespace, each service on a free port of its address.

A partition (`Network.partition`) makes a host and a set of peers unable to
reach each other: with namespaces, a permanent neighbour entry on each side points
the other's IP at a MAC address nobody has, so frames vanish in the bridge, as on
a broken link (TCP stalls and times out; nothing is refused). On loopback the
harness relays the traffic it has to cut (`Relay`): the partitioned host reaches
etcd through a relay of this process that stops forwarding.

Everything is named after this process's PID (`mct<pid>-<host>`, `mcb<pid>`,
`mcv<pid><host>`) and removed by `close()`: the processes it started (by PID),
the namespaces, the veths and the bridge, even after a failure. Leftovers of
earlier runs whose process is gone are swept at the start.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / os.environ.get(
    "MICRO_CLUSTER_PROFILE", "debug"
)

RUN = os.getpid()
NS_PREFIX = "mct"
BRIDGE_PREFIX = "mcb"
VETH_PREFIX = "mcv"
# A bogus, locally administered MAC: frames sent to it are lost in the bridge.
NOWHERE_MAC = "02:00:5e:00:de:ad"


class HarnessError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*argv: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    """Runs a short command (ip, sysctl) and returns its result."""
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    if r.returncode != 0 and not quiet:
        log(f"ignored: {' '.join(argv)}: {r.stderr.strip()}")
    return r


def binary(name: str) -> str:
    """A binary of this workspace (target/debug), or a system one on PATH/sbin."""
    built = TARGET / name
    if built.exists():
        return str(built)
    for found in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if found and os.path.exists(found):
            return found
    raise HarnessError(f"{name} not found (looked in {TARGET}, PATH, /usr/sbin, /usr/bin)")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------
# Processes


class Proc:
    """A process the harness started on a host; stopped by its PID only."""

    def __init__(self, name: str, host: "Host", argv: list[str], env: dict[str, str], logdir: Path):
        self.name = name
        self.host = host
        self.argv = argv
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self._log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        self._log.flush()
        # `ip netns exec` execs the command after entering the namespace: the PID
        # of the Popen is the PID of the program itself.
        self.popen = subprocess.Popen(
            host.prefix + argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.started = time.monotonic()
        STARTED.append(self)
        # For the sweep of a run that was killed before it could clean up.
        with open(logdir.parent / "pids", "a") as f:
            f.write(f"{self.pid} {argv[0]}\n")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """kill -9, and reap it."""
        self.signal(signal.SIGKILL)
        self.popen.wait()
        self._close_log()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) ignored SIGTERM for {timeout}s: SIGKILL")
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait()
        self._close_log()
        return self.popen.returncode

    def _close_log(self) -> None:
        if not self._log.closed:
            self._log.close()

    def log_text(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"Proc({self.name}, pid {self.pid} on {self.host.name})"


STARTED: list[Proc] = []


def stop_all(timeout: float = 5.0) -> None:
    """Stops every process still running that this harness started."""
    for p in reversed(STARTED):
        if p.alive():
            try:
                p.stop(timeout=timeout)
            except Exception as e:  # noqa: BLE001 (cleanup goes on)
                log(f"stopping {p}: {e}")
    STARTED.clear()


# ---------------------------------------------------------------------------
# Hosts and networks


class Host:
    """One machine of the cluster: a network namespace, or a loopback address."""

    def __init__(self, name: str, ip: str, netns: str | None, network: "Network"):
        self.name = name
        self.ip = ip
        self.netns = netns
        self.network = network
        self._ports: dict[str, int] = {}

    @property
    def prefix(self) -> list[str]:
        """What runs a command on this host."""
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def port(self, role: str, default: int) -> int:
        """The port `role` uses on this host: `default` in a namespace of its own,
        a free port of this address on shared loopback. Stable per role."""
        if role not in self._ports:
            self._ports[role] = default if self.netns else free_port(self.ip)
        return self._ports[role]

    def address(self, role: str, default: int) -> str:
        return f"{self.ip}:{self.port(role, default)}"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh(*self.prefix, *argv, check=check)

    def __repr__(self) -> str:
        return f"Host({self.name} {self.ip}{' ns ' + self.netns if self.netns else ''})"


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class Network:
    """The hosts of one run; `NetnsNetwork` or `LoopbackNetwork`."""

    mode = "?"

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self.client_ip = "127.0.0.1"

    def add_host(self, name: str) -> Host:
        raise NotImplementedError

    def partition(self, host: Host, peers: Iterable[Host]) -> None:
        raise NotImplementedError

    def heal(self, host: Host) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return ", ".join(f"{h.name}={h.ip}" for h in self.hosts.values())


def namespaces_allowed() -> tuple[bool, str]:
    """Whether this process may create network namespaces and veths, and if not, why."""
    if sys.platform != "linux":
        return False, "not Linux"
    if os.environ.get("MICRO_CLUSTER_NETNS") == "0":
        return False, "MICRO_CLUSTER_NETNS=0"
    if shutil.which("ip") is None:
        return False, "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return False, "not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    probe = f"{NS_PREFIX}{RUN}-probe"
    r = sh("ip", "netns", "add", probe, check=False, quiet=True)
    if r.returncode != 0:
        return False, f"`ip netns add` failed: {r.stderr.strip()}"
    try:
        r = sh("ip", "link", "add", f"{VETH_PREFIX}{RUN}p", "type", "veth", "peer", "name", "eth0",
               "netns", probe, check=False, quiet=True)
        if r.returncode != 0:
            return False, f"creating a veth pair failed: {r.stderr.strip()}"
        sh("ip", "link", "del", f"{VETH_PREFIX}{RUN}p", check=False, quiet=True)
        return True, "network namespaces"
    finally:
        sh("ip", "netns", "del", probe, check=False, quiet=True)


def sweep_stale() -> None:
    """Removes what earlier runs whose process is gone left behind: the processes
    they started (by the PIDs each run wrote down, if the program is still the
    same), their namespaces, veths and bridges, and their work dirs."""
    for pids in Path(tempfile.gettempdir()).glob("micro-cluster-*-*/pids"):
        m = re.fullmatch(r"micro-cluster-(\d+)-.*", pids.parent.name)
        if not m or pid_alive(int(m.group(1))):
            continue
        for line in pids.read_text(errors="replace").splitlines():
            pid, _, program = line.partition(" ")
            try:
                exe = os.readlink(f"/proc/{int(pid)}/exe").removesuffix(" (deleted)")
            except (OSError, ValueError):
                continue
            if exe == program or os.path.basename(exe) == os.path.basename(program):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    log(f"swept stale process {pid} ({program})")
                except (ProcessLookupError, PermissionError):
                    pass
        shutil.rmtree(pids.parent, ignore_errors=True)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return
    listed = sh("ip", "netns", "list", check=False, quiet=True).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{NS_PREFIX}(\d+)-\w+", name)
        if not m or pid_alive(int(m.group(1))):
            continue
        pids = sh("ip", "netns", "pids", name, check=False, quiet=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", name, check=False, quiet=True)
        log(f"swept stale namespace {name} ({len(pids)} process(es))")
    links = sh("ip", "-o", "link", "show", check=False, quiet=True).stdout
    for line in links.splitlines():
        m = re.match(rf"\d+: (({BRIDGE_PREFIX}|{VETH_PREFIX})(\d+)\w*)[@:]", line)
        if m and not pid_alive(int(m.group(3))):
            sh("ip", "link", "del", m.group(1), check=False, quiet=True)
            log(f"swept stale link {m.group(1)}")


def pick_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.0.0.0/8 that overlaps no address or route of this machine."""
    used: list[ipaddress.IPv4Network] = []
    out = sh("ip", "-4", "-o", "route", "show", "table", "all", check=False, quiet=True).stdout
    out += sh("ip", "-4", "-o", "addr", "show", check=False, quiet=True).stdout
    for token in re.findall(r"(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", out):
        try:
            net = ipaddress.ip_network(token, strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0:
            used.append(net)
    for i in range(256):
        third = (RUN + i) % 256
        candidate = ipaddress.ip_network(f"10.213.{third}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise HarnessError("no free /24 in 10.213.0.0/16 for the cluster's bridge")


def _disable_ipv6(iface: str, prefix: list[str] | None = None) -> None:
    for key in ("disable_ipv6",):
        sh(*(prefix or []), "sysctl", "-q", "-w", f"net.ipv6.conf.{iface}.{key}=1", check=False,
           quiet=True)


class NetnsNetwork(Network):
    mode = "netns"

    def __init__(self) -> None:
        super().__init__()
        self.subnet = pick_subnet()
        self.bridge = f"{BRIDGE_PREFIX}{RUN}"
        self._next = 10
        self._partitions: dict[str, list[tuple[Host, Host]]] = {}
        addrs = list(self.subnet.hosts())
        self.client_ip = str(addrs[0])
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        try:
            _disable_ipv6(self.bridge)
            sh("ip", "link", "set", self.bridge, "multicast", "off")
            sh("ip", "addr", "add", f"{self.client_ip}/{self.subnet.prefixlen}", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
        except BaseException:
            sh("ip", "link", "del", self.bridge, check=False)
            raise

    def add_host(self, name: str) -> Host:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,3}", name):
            raise HarnessError(f"host names are 1-4 lowercase letters/digits: {name!r}")
        ns = f"{NS_PREFIX}{RUN}-{name}"
        veth = f"{VETH_PREFIX}{RUN}{name}"
        ip = str(list(self.subnet.hosts())[self._next - 1])
        self._next += 1
        sh("ip", "netns", "add", ns)
        host = Host(name, ip, ns, self)
        self.hosts[name] = host
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _disable_ipv6(veth)
        sh("ip", "link", "set", veth, "multicast", "off")
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        p = host.prefix
        sh(*p, "ip", "link", "set", "lo", "up")
        _disable_ipv6("all", p)
        _disable_ipv6("default", p)
        _disable_ipv6("eth0", p)
        sh(*p, "ip", "link", "set", "eth0", "multicast", "off")
        sh(*p, "ip", "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
        sh(*p, "ip", "link", "set", "eth0", "up")
        return host

    def partition(self, host: Host, peers: Iterable[Host]) -> None:
        pairs = self._partitions.setdefault(host.name, [])
        for peer in peers:
            for a, b in ((host, peer), (peer, host)):
                sh(*a.prefix, "ip", "neigh", "replace", b.ip, "lladdr", NOWHERE_MAC, "nud",
                   "permanent", "dev", "eth0")
                pairs.append((a, b))

    def heal(self, host: Host) -> None:
        for a, b in self._partitions.pop(host.name, []):
            sh(*a.prefix, "ip", "neigh", "del", b.ip, "dev", "eth0", check=False)

    def reachable(self, a: Host, b: Host, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from host a to b:port succeeds."""
        code = (
            "import socket,sys\n"
            f"s=socket.create_connection(('{b.ip}',{port}),timeout={timeout})\n"
            "s.close()"
        )
        r = sh(*a.prefix, sys.executable, "-c", code, check=False, quiet=True)
        return r.returncode == 0

    def close(self) -> None:
        for host in list(self.hosts.values()):
            # A namespace lives on while a process is in it: end ours first.
            for pid in sh("ip", "netns", "pids", host.netns, check=False, quiet=True).stdout.split():
                if any(p.pid == int(pid) for p in STARTED):
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            sh("ip", "link", "del", f"{VETH_PREFIX}{RUN}{host.name}", check=False, quiet=True)
            sh("ip", "netns", "del", host.netns, check=False)
        self.hosts.clear()
        sh("ip", "link", "del", self.bridge, check=False, quiet=True)


class LoopbackNetwork(Network):
    """Hosts as distinct loopback addresses (127.<a>.<b>.<n>) of this namespace."""

    mode = "loopback"

    def __init__(self) -> None:
        super().__init__()
        self.base = f"127.{10 + RUN % 200}.{(RUN // 200) % 250}"
        self._next = 10
        self.relays: list[Relay] = []

    def add_host(self, name: str) -> Host:
        host = Host(name, f"{self.base}.{self._next}", None, self)
        self._next += 1
        self.hosts[name] = host
        return host

    def partition(self, host: Host, peers: Iterable[Host]) -> None:
        peer_names = {p.name for p in peers}
        for relay in self.relays:
            if relay.host is host and relay.target_host.name in peer_names:
                relay.cut()

    def heal(self, host: Host) -> None:
        for relay in self.relays:
            if relay.host is host:
                relay.mend()

    def reachable(self, a: Host, b: Host, port: int, timeout: float = 1.0) -> bool:
        try:
            with socket.create_connection((b.ip, port), timeout=timeout, source_address=(a.ip, 0)):
                return True
        except OSError:
            return False

    def close(self) -> None:
        for relay in self.relays:
            relay.close()
        self.relays.clear()
        self.hosts.clear()


class Relay:
    """A TCP relay on `host` to `target` (loopback fallback): what `host` uses to
    reach a peer that a partition must be able to cut. `cut()` stops forwarding
    in both directions and leaves connections hanging (data stays queued, as
    behind a broken link); `mend()` resumes them."""

    def __init__(self, host: Host, target_host: Host, target: tuple[str, int]):
        self.host = host
        self.target_host = target_host
        self.target = target
        self.listener = socket.create_server((host.ip, 0))
        self.address = f"{host.ip}:{self.listener.getsockname()[1]}"
        self.open = threading.Event()
        self.open.set()
        self.closed = False
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name=f"relay-{host.name}").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.open.wait()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self.open.wait()
                data = src.recv(65536)
                if not data:
                    break
                self.open.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open.clear()

    def mend(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.closed = True
        self.open.set()
        for s in [self.listener, *self.socks]:
            try:
                s.close()
            except OSError:
                pass


def make_network(netns: bool | None = None) -> tuple[Network, str]:
    """The network of this run and why that kind: namespaces where allowed."""
    sweep_stale()
    allowed, why = namespaces_allowed() if netns is not False else (False, "asked for loopback")
    if allowed:
        return NetnsNetwork(), why
    return LoopbackNetwork(), why


# ---------------------------------------------------------------------------
# HTTP helpers (etcd's JSON API, probes)


def http_json(url: str, body: dict | None = None, timeout: float = 1.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as rsp:
        return json.loads(rsp.read() or b"{}")


def wait_until(what: str, check: Callable[[], object], timeout: float, every: float = 0.1):
    """Polls `check` until it returns something truthy; its value, or a HarnessError."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 (polled: report the last one)
            last_error = e
        if time.monotonic() > deadline:
            raise HarnessError(
                f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last_error})" if last_error else "")
            )
        time.sleep(every)


def port_open(ip: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# etcd


class EtcdMember:
    def __init__(self, cluster: "EtcdCluster", name: str, host: Host):
        self.cluster = cluster
        self.name = name
        self.host = host
        self.client_port = host.port("etcd-client", 2379)
        self.peer_port = host.port("etcd-peer", 2380)
        self.client = f"{host.ip}:{self.client_port}"
        self.peer_url = f"http://{host.ip}:{self.peer_port}"
        self.data_dir = cluster.workdir / f"etcd-{name}"
        self.proc: Proc | None = None
        self.member_id: str | None = None

    def start(self) -> None:
        c = self.cluster
        argv = [
            c.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls=http://{self.client}",
            f"--advertise-client-urls=http://{self.client}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={c.initial_cluster}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=micro-cluster-{RUN}",
            # etcd's defaults (100 ms heartbeat, 1 s election), kept: what users run.
            "--heartbeat-interval=100",
            "--election-timeout=1000",
            "--log-level=warn",
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(c.workdir)}
        self.proc = Proc(f"etcd-{self.name}", self.host, argv, env, c.logdir)

    def status(self, timeout: float = 0.5) -> dict:
        """etcd's maintenance status: `header.member_id`, `leader`, `raftTerm`."""
        return http_json(f"http://{self.client}/v3/maintenance/status", {}, timeout)

    def healthy(self) -> bool:
        try:
            return http_json(f"http://{self.client}/health", timeout=0.5).get("health") == "true"
        except (OSError, ValueError):
            return False

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()

    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()


class EtcdCluster:
    """A 3-member (or n-member) etcd cluster, one member per host, Debian's etcd."""

    def __init__(self, hosts: list[Host], workdir: Path, logdir: Path):
        self.binary = binary("etcd")
        self.workdir = workdir
        self.logdir = logdir
        self.members = [EtcdMember(self, h.name, h) for h in hosts]
        self.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        return [m.client for m in self.members]

    def start(self, timeout: float = 30.0) -> None:
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)
        for m in self.members:
            m.member_id = str(m.status()["header"]["member_id"])

    def wait_healthy(self, timeout: float = 30.0, members: list[EtcdMember] | None = None) -> None:
        members = members or self.members

        def ok() -> bool:
            for m in members:
                if m.proc is not None and not m.proc.alive():
                    raise HarnessError(f"etcd {m.name} exited:\n{m.proc.log_text()}")
            return all(m.healthy() for m in members)

        wait_until("a healthy etcd cluster", ok, timeout, every=0.2)

    def leader(self, among: list[EtcdMember] | None = None) -> EtcdMember | None:
        """The member the running members agree is the leader, or None."""
        seen = set()
        for m in among or [m for m in self.members if m.running()]:
            try:
                seen.add(str(m.status()["leader"]))
            except (OSError, ValueError, KeyError):
                continue
        if len(seen) != 1:
            return None
        leader_id = seen.pop()
        for m in self.members:
            if m.member_id == leader_id and m.running():
                return m
        return None

    def restart(self, member: EtcdMember, timeout: float = 30.0) -> None:
        """Starts a stopped member again on its data dir: it rejoins the cluster."""
        assert not member.running()
        member.start()
        self.wait_healthy(timeout)


# ---------------------------------------------------------------------------
# NATS


class Nats:
    """nats-server with JetStream, its file store in the run's work dir."""

    def __init__(self, host: Host, workdir: Path, logdir: Path):
        self.binary = binary("nats-server")
        self.host = host
        self.port = host.port("nats", 4222)
        self.url = f"nats://{host.ip}:{self.port}"
        self.store = workdir / "nats-store"
        self.logdir = logdir
        self.proc: Proc | None = None

    def start(self, timeout: float = 15.0) -> None:
        argv = [self.binary, "-a", self.host.ip, "-p", str(self.port), "-js", "-sd",
                str(self.store), "-n", f"micro-cluster-{RUN}"]
        self.proc = Proc("nats", self.host, argv, {"PATH": os.environ.get("PATH", "")}, self.logdir)
        wait_until("nats-server to listen", lambda: self._up(), timeout)

    def _up(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise HarnessError(f"nats-server exited:\n{self.proc.log_text()}")
        return port_open(self.host.ip, self.port)

    def stop(self) -> int:
        assert self.proc is not None
        return self.proc.stop()


# ---------------------------------------------------------------------------
# A cluster of engines (what the bench and the tests share)


def micro_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a micro process: this one's minus every MICRO_* variable
    (so nothing of the caller's setup leaks in), mDNS off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MICRO_", "GREETER_"))}
    env["MICRO_MDNS_INTERFACES"] = "none"
    env.update(extra or {})
    return env


class Cluster:
    """Hosts, an etcd cluster and optionally nats-server, torn down by `close()`."""

    def __init__(self, hosts: list[str], etcd_hosts: list[str], nats_host: str | None = None,
                 netns: bool | None = None, workdir: Path | None = None, relays: bool = False):
        self.closed = False
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"micro-cluster-{RUN}-"))
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)
        self.network: Network | None = None
        try:
            self.network, self.why = make_network(netns)
            log(f"hosts as {self.network.mode} ({self.why}); work dir {self.workdir}")
            for name in [*etcd_hosts, *([nats_host] if nats_host else []), *hosts]:
                if name not in self.network.hosts:
                    self.network.add_host(name)
            log(f"hosts: {self.network.describe()}")
            self.etcd = EtcdCluster([self.host(h) for h in etcd_hosts], self.workdir, self.logdir)
            self.nats = Nats(self.host(nats_host), self.workdir, self.logdir) if nats_host else None
            # On loopback a partition needs relays: every other host reaches etcd
            # through relays of its own, which a partition cuts.
            self._relays: dict[str, list[str]] = {}
            if relays and isinstance(self.network, LoopbackNetwork):
                for name in hosts:
                    addrs = []
                    for m in self.etcd.members:
                        r = Relay(self.host(name), m.host, (m.host.ip, m.client_port))
                        self.network.relays.append(r)
                        addrs.append(r.address)
                    self._relays[name] = addrs
        except BaseException:
            self.close()
            raise

    def host(self, name: str) -> Host:
        return self.network.hosts[name]

    def registry_address(self, host: Host | str, members: list[int] | None = None) -> str:
        """The etcd endpoints processes on `host` are given (comma-separated)."""
        name = host if isinstance(host, str) else host.name
        addrs = self._relays.get(name) or self.etcd.endpoints
        if members is not None:
            addrs = [addrs[i] for i in members]
        return ",".join(addrs)

    def start(self) -> None:
        t = time.monotonic()
        self.etcd.start()
        log(f"etcd cluster healthy in {time.monotonic() - t:.1f}s: {','.join(self.etcd.endpoints)}")
        if self.nats:
            self.nats.start()
            log(f"nats-server (JetStream) up at {self.nats.url}")

    def spawn(self, name: str, host: Host | str, argv: list[str], env: dict[str, str]) -> Proc:
        h = host if isinstance(host, Host) else self.host(host)
        return Proc(name, h, argv, env, self.logdir)

    def topology(self) -> dict:
        """What a program run by `harness.py run` gets in MICRO_CLUSTER_TOPOLOGY."""
        return {
            "mode": self.network.mode,
            "why": self.why,
            "client_ip": self.network.client_ip,
            "hosts": {
                h.name: {"ip": h.ip, "exec": h.prefix, "etcd": self.registry_address(h)}
                for h in self.network.hosts.values()
            },
            "etcd": [{"name": m.name, "host": m.host.name, "address": m.client}
                     for m in self.etcd.members],
            "nats": self.nats.url if self.nats else None,
            "workdir": str(self.workdir),
        }

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        stop_all()
        try:
            if self.network is not None:
                self.network.close()
        except Exception as e:  # noqa: BLE001
            log(f"removing the network: {e}")
        # Everything is stopped: nothing for a later run to sweep.
        (self.workdir / "pids").unlink(missing_ok=True)
        if self._own_workdir and not os.environ.get("MICRO_CLUSTER_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Command line: run a program next to a cluster (bench/registry-etcd uses this)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build hosts (network namespaces, or loopback addresses) with a "
        "3-member etcd cluster, run a command in the root namespace with "
        "MICRO_CLUSTER_TOPOLOGY (JSON) describing them, and tear everything down.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a command next to the cluster")
    run.add_argument("--hosts", default="a,b", help="extra hosts, comma-separated (default a,b)")
    run.add_argument("--etcd", type=int, default=3, help="etcd members (default 3)")
    run.add_argument("--nats", action="store_true", help="also run nats-server with JetStream")
    run.add_argument("--loopback", action="store_true", help="hosts as loopback addresses")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (harness.py run [options] -- COMMAND ...)")
    # A SIGTERM/SIGINT tears the cluster down too.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    cluster = Cluster(
        hosts=[h for h in args.hosts.split(",") if h],
        etcd_hosts=[f"e{i + 1}" for i in range(args.etcd)],
        nats_host="n1" if args.nats else None,
        netns=False if args.loopback else None,
    )
    child = None
    try:
        cluster.start()
        env = dict(os.environ, MICRO_CLUSTER_TOPOLOGY=json.dumps(cluster.topology()))
        child = subprocess.Popen(command, env=env)
        return child.wait()
    except KeyboardInterrupt:
        if child and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        return 130
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
