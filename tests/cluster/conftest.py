"""Fixtures of the cluster tests: one cluster per module (hosts, a 3-member etcd
cluster, nats-server with JetStream, the API gateway and greeter nodes on
different hosts), and the summary table printed and written at the end.

Layout (`harness.py` builds the hosts; see its docstring for how):

    e1 e2 e3   one etcd member each (Debian's etcd, its default 100 ms heartbeat
               and 1 s election timeout)
    n1         nats-server -js, file store in the run's temp dir
    gw         `micro api --registry etcd --broker nats` on :8080
    h1 h2 h3   one greeter node each (`greeter`, registered in etcd, publishing
               greeter.hello events on NATS)
    h4         spare host for nodes started during a scenario
    c1         a CLI host: `micro subscribe`/`micro publish` for the NATS scenario

The test process drives load through the gateway from the root namespace (over
the bridge) and watches the registry with `micro get service greeter`, as a user
would.

Registration timing: every node registers with `MICRO_REGISTER_TTL=5s` and
renews every `MICRO_REGISTER_INTERVAL=1s`. 5 s is short enough for a dead node to
leave within a test's patience, long enough that a member's death and an etcd
election (about 1-2 s with etcd's default 1 s election timeout) never lets a live
node's lease lapse; the 1 s interval leaves four renewals of slack inside a TTL.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from load import Load, Result  # noqa: E402

TTL = 5.0
INTERVAL = 1.0
# What "within its lease TTL" may add: etcd checks for expired leases every
# 500 ms, the revocation is a raft round, the watch event and our own poll of
# the registry (every 0.2 s with a CLI process start) come on top.
SLACK = 2.0
GATEWAY_PORT = 8080
GREETER_PORT = 9090

SUMMARY_FILE = Path(
    os.environ.get("MICRO_CLUSTER_SUMMARY", harness.TARGET.parent / "cluster" / "summary.md")
)
SUMMARY: list[dict] = []
CONTEXT: dict[str, str] = {}


def pytest_configure(config):
    # A SIGTERM (CI cancelling the job) unwinds like Ctrl-C, so fixtures tear down.
    def interrupt(*_):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)


class Greeter:
    def __init__(self, tag: str, host: harness.Host, proc: harness.Proc, address: str):
        self.tag, self.host, self.proc, self.address = tag, host, proc, address

    def __repr__(self) -> str:
        return f"Greeter({self.tag} at {self.address}, pid {self.proc.pid})"


class Stack:
    """The cluster and micro on it: the gateway and the greeter nodes."""

    GREETER_HOSTS = ["h1", "h2", "h3"]

    def __init__(self, cluster: harness.Cluster):
        self.cluster = cluster
        self.micro = harness.binary("micro")
        self.greeter_binary = harness.binary("greeter")
        self.greeters: dict[str, Greeter] = {}
        self._generation: dict[str, int] = {}
        gw = cluster.host("gw")
        self.gateway_ip = gw.ip
        self.gateway_port = gw.port("gateway", GATEWAY_PORT)
        self.gateway: harness.Proc | None = None

    # -- environment

    def env(self, host: harness.Host, extra: dict[str, str] | None = None) -> dict[str, str]:
        assert self.cluster.nats is not None
        return harness.micro_env({
            "MICRO_REGISTRY": "etcd",
            "MICRO_REGISTRY_ADDRESS": self.cluster.registry_address(host),
            "MICRO_REGISTER_TTL": f"{TTL:g}s",
            "MICRO_REGISTER_INTERVAL": f"{INTERVAL:g}s",
            "MICRO_BROKER": "nats",
            "MICRO_BROKER_ADDRESS": self.cluster.nats.url,
            **(extra or {}),
        })

    def cli_env(self) -> dict[str, str]:
        """The user's shell in the root namespace: every etcd member, directly."""
        assert self.cluster.nats is not None
        return harness.micro_env({
            "MICRO_REGISTRY": "etcd",
            "MICRO_REGISTRY_ADDRESS": ",".join(self.cluster.etcd.endpoints),
            "MICRO_BROKER": "nats",
            "MICRO_BROKER_ADDRESS": self.cluster.nats.url,
        })

    # -- processes

    def start_gateway(self) -> None:
        gw = self.cluster.host("gw")
        assert self.cluster.nats is not None
        self.gateway = self.cluster.spawn(
            "gateway", gw,
            [self.micro, "api", "--address", f"{gw.ip}:{self.gateway_port}",
             # Not loopback, no auth wrapper: a private test network.
             "--insecure",
             "--registry", "etcd", "--registry_address", self.cluster.registry_address(gw),
             "--broker", "nats", "--broker_address", self.cluster.nats.url],
            self.env(gw),
        )
        harness.wait_until("the gateway to listen", lambda: self._gateway_up(), 30)

    def _gateway_up(self) -> bool:
        assert self.gateway is not None
        if not self.gateway.alive():
            raise harness.HarnessError(f"micro api exited:\n{self.gateway.log_text()}")
        return harness.port_open(self.gateway_ip, self.gateway_port)

    def start_greeter(self, host_name: str) -> Greeter:
        host = self.cluster.host(host_name)
        gen = self._generation.get(host_name, 0)
        self._generation[host_name] = gen + 1
        tag = f"{host_name}{chr(ord('a') + gen)}"
        address = host.address("greeter", GREETER_PORT)
        proc = self.cluster.spawn(
            f"greeter-{tag}", host, [self.greeter_binary],
            self.env(host, {"MICRO_SERVER_ADDRESS": address, "GREETER_GREETING": f"Hello-{tag}"}),
        )
        g = Greeter(tag, host, proc, address)
        self.greeters[tag] = g
        return g

    def running(self) -> list[Greeter]:
        return [g for g in self.greeters.values() if g.proc.alive()]

    def forget(self, g: Greeter) -> None:
        self.greeters.pop(g.tag, None)

    # -- what a user sees

    def micro_cli(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run([self.micro, *args], env=self.cli_env(), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def registered(self) -> set[str]:
        """Addresses of the greeter nodes `micro get service greeter` lists (empty
        when it fails)."""
        try:
            r = self.micro_cli("get", "service", "greeter", "-o", "json", timeout=10)
        except subprocess.TimeoutExpired:
            return set()
        if r.returncode != 0:
            return set()
        return {n["address"] for s in json.loads(r.stdout) for n in s.get("nodes", [])}

    def wait_registered(self, greeters: list[Greeter], timeout: float = 20) -> float:
        """Waits until every one of `greeters` is listed; returns the time it took."""
        t = time.monotonic()
        want = {g.address for g in greeters}

        def ok():
            for g in greeters:
                if not g.proc.alive():
                    raise harness.HarnessError(f"{g} exited:\n{g.proc.log_text()}")
            return want <= self.registered()

        harness.wait_until(f"{[g.tag for g in greeters]} in the registry", ok, timeout, every=0.2)
        return time.monotonic() - t

    def wait_unregistered(self, address: str, timeout: float) -> float:
        t = time.monotonic()
        harness.wait_until(f"{address} to leave the registry",
                           lambda: address not in self.registered(), timeout, every=0.2)
        return time.monotonic() - t

    def load(self, **kw) -> Load:
        return Load(self.gateway_ip, self.gateway_port, **kw)

    def ensure_baseline(self) -> None:
        """One running greeter on each of h1..h3 and nothing else, all registered
        and answering through the gateway (what every scenario starts from)."""
        for g in list(self.greeters.values()):
            if not g.proc.alive() or g.host.name not in self.GREETER_HOSTS:
                if g.proc.alive():
                    g.proc.stop()
                self.forget(g)
        on = {g.host.name for g in self.running()}
        for h in self.GREETER_HOSTS:
            if h not in on:
                self.start_greeter(h)
        self.wait_registered(self.running(), timeout=30)
        # The gateway answers from each of them.
        load = self.load(connections=2, interval=0.01, max_seconds=20).start()
        try:
            for g in self.running():
                load.wait_for_node(g.tag, timeout=15, since=0)
        finally:
            load.stop()


def record(scenario: str, result: Result, notes: str) -> None:
    """A row of the summary table (added before a scenario asserts, so failed
    scenarios show up too), and every request of the scenario in
    `<summary dir>/<scenario>.csv` (start s, latency ms, ok, node, error)."""
    slug = re.sub(r"[^a-z0-9]+", "-", scenario.lower()).strip("-")
    try:
        SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
        with open(SUMMARY_FILE.parent / f"{slug}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["start_s", "latency_ms", "ok", "node", "error"])
            for r in result.requests:
                w.writerow([f"{r.at:.3f}", f"{r.latency * 1000:.1f}", int(r.ok), r.node or "",
                            r.error or ""])
    except OSError:
        pass
    SUMMARY.append({
        "scenario": scenario,
        "sent": result.sent,
        "failed": result.failed,
        "p99": result.latency_ms(0.99),
        "max": result.latency_ms(1.0),
        "notes": notes,
    })


def summary_markdown() -> str:
    lines = [
        "| scenario | requests sent | failed | p99 latency | max latency | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in SUMMARY:
        lines.append(
            f"| {row['scenario']} | {row['sent']} | {row['failed']} | {row['p99']:.0f} ms | "
            f"{row['max']:.0f} ms | {row['notes']} |"
        )
    head = ", ".join(f"{k}: {v}" for k, v in CONTEXT.items())
    return (f"Cluster tests ({head})\n\n" if head else "") + "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter):
    if not SUMMARY:
        return
    text = summary_markdown()
    terminalreporter.write_sep("=", "cluster summary")
    terminalreporter.write(text)
    try:
        SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY_FILE.write_text(text)
        terminalreporter.write_line(f"(written to {SUMMARY_FILE})")
    except OSError as e:
        terminalreporter.write_line(f"(could not write {SUMMARY_FILE}: {e})")


@pytest.fixture(scope="module")
def cluster():
    try:
        c = harness.Cluster(
            hosts=["gw", *Stack.GREETER_HOSTS, "h4", "c1"],
            etcd_hosts=["e1", "e2", "e3"],
            nats_host="n1",
            relays=True,
        )
    except harness.HarnessError as e:
        pytest.fail(f"building the cluster: {e}")
    try:
        c.start()
        CONTEXT["hosts"] = f"{c.network.mode} ({c.why})"
        CONTEXT["TTL"] = f"{TTL:g}s, renewed every {INTERVAL:g}s"
        yield c
    finally:
        if os.environ.get("MICRO_CLUSTER_KEEP"):
            print(f"\nlogs kept in {c.logdir}", file=sys.stderr)
        c.close()


@pytest.fixture(scope="module")
def stack(cluster):
    s = Stack(cluster)
    s.start_gateway()
    for h in Stack.GREETER_HOSTS:
        s.start_greeter(h)
    try:
        s.wait_registered(s.running(), timeout=60)
    except harness.HarnessError as e:
        logs = "\n".join(f"--- {g.tag}\n{g.proc.log_text(2000)}" for g in s.greeters.values())
        pytest.fail(f"{e}\n{logs}")
    return s


@pytest.fixture
def baseline(stack, request):
    """The stack with its three greeters up; on failure, the logs of what ran."""
    stack.ensure_baseline()
    yield stack
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        procs = [stack.gateway, *[g.proc for g in stack.greeters.values()]]
        for p in procs:
            if p is not None:
                print(f"\n--- log of {p.name} (tail)\n{p.log_text(3000)}", file=sys.stderr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
