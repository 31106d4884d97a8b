"""micro on several hosts under faults: etcd registry, NATS broker, API gateway.

Each scenario drives steady load through the gateway (`load.Load`: 4 kept-alive
connections, one request each every 20 ms, so at most 200 requests/s, bounded in
time and count) and asserts on what a user sees: failed requests, and the
registry as `micro get service greeter` shows it. Every scenario adds a row to the
summary table printed at the end (conftest.py), also when one of its steps fails.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

import harness
from conftest import SLACK, TTL, Stack, record
from load import Result

# How long the gateway's host stays cut off from etcd: more than a TTL (the
# registry changes meanwhile) and more than the etcd client's deadline for one
# request (about 9 s over three unreachable members), so a gateway that needs etcd
# to answer a request shows failed requests, not only slow ones.
GATEWAY_CUT = 12.0


class Scenario:
    """Load through the gateway for the length of a `with` block, and the row of
    the summary table: the load's result and the notes taken, plus the error a
    step failed with, if one did (the error is raised on)."""

    def __init__(self, stack: Stack, name: str):
        self.stack, self.name = stack, name
        self.notes: list[str] = []
        self.res: Result | None = None

    def __enter__(self) -> "Scenario":
        self.load = self.stack.load().start()
        return self

    def note(self, text: str) -> None:
        self.notes.append(text)

    def stop(self) -> Result:
        """Stops the load (once) and returns what it measured."""
        if self.res is None:
            self.res = self.load.stop()
        return self.res

    def __exit__(self, kind, error, tb) -> bool:
        res = self.stop()
        if error is not None:
            self.note(f"STOPPED: {str(error).splitlines()[0] if str(error) else kind.__name__}")
        record(self.name, res, "; ".join(self.notes))
        return False


def etcd_hosts(cluster: harness.Cluster) -> list[harness.Host]:
    return [m.host for m in cluster.etcd.members]


# ---------------------------------------------------------------------------
# The harness itself


def test_harness_self_check(cluster):
    """Hosts reach each other, a partition cuts exactly what it should, etcd has
    a leader, nats-server takes connections."""
    net = cluster.network
    gw, h1, e1 = cluster.host("gw"), cluster.host("h1"), cluster.host("e1")
    members = cluster.etcd.members
    for m in members:
        assert m.healthy(), f"etcd {m.name} is not healthy"
    assert cluster.etcd.leader() is not None, "the etcd members do not agree on a leader"
    assert cluster.nats is not None
    assert harness.port_open(cluster.nats.host.ip, cluster.nats.port)
    if isinstance(net, harness.NetnsNetwork):
        for h in (gw, h1):
            for m in members:
                assert net.reachable(h, m.host, m.client_port), f"{h} cannot reach etcd {m.name}"
        assert net.reachable(gw, cluster.nats.host, cluster.nats.port)
        # No route out of a host but its own subnet.
        routes = gw.run("ip", "-4", "route").stdout
        assert "default" not in routes, routes
        net.partition(gw, etcd_hosts(cluster))
        try:
            for m in members:
                assert not net.reachable(gw, m.host, m.client_port, timeout=0.5)
            # Only etcd is cut off, and only for gw.
            assert net.reachable(gw, cluster.nats.host, cluster.nats.port)
            assert net.reachable(h1, e1, members[0].client_port)
        finally:
            net.heal(gw)
        assert net.reachable(gw, e1, members[0].client_port)


# ---------------------------------------------------------------------------
# Scenarios


def test_kill_node(baseline):
    """kill -9 one greeter node under steady load: no request fails, and the node
    leaves the registry within its lease TTL."""
    s = baseline
    victim = s.running()[0]
    gone = None
    with Scenario(s, "kill -9 one greeter node") as sc:
        time.sleep(2)
        t_kill = time.monotonic()
        victim.proc.kill()
        s.forget(victim)
        try:
            gone = s.wait_unregistered(victim.address, TTL + SLACK + 5)
            sc.note(f"{victim.tag} left the registry {gone:.1f}s after kill -9 (TTL {TTL:g}s)")
        except harness.HarnessError:
            sc.note(f"{victim.tag} still registered {TTL + SLACK + 5:g}s after kill -9")
        time.sleep(1.5)
        res = sc.stop()
        sc.note(f"answers after the kill: {dict(res.per_node(since=res.at(t_kill) + 0.5))}")
    assert res.failed == 0, res.describe_failures()
    assert gone is not None and gone <= TTL + SLACK, sc.notes[0]


def test_rolling_restart(baseline):
    """SIGTERM, wait, start again, one node at a time: no request fails."""
    s = baseline
    old = list(s.running())
    codes, found = [], []
    with Scenario(s, "rolling restart of all greeter nodes") as sc:
        sc.note(f"{len(old)} nodes, one at a time: SIGTERM, a new node on the same host")
        time.sleep(1.5)
        for g in old:
            codes.append(g.proc.stop())
            s.forget(g)
            new = s.start_greeter(g.host.name)
            t = time.monotonic()
            s.wait_registered([new], timeout=20)
            sc.load.wait_for_node(new.tag, timeout=10)
            found.append(time.monotonic() - t)
        sc.note(f"exit codes on SIGTERM {codes}; each new node answered through the gateway "
                f"{max(found):.1f}s after its start at most")
        time.sleep(1.5)
    assert sc.res.failed == 0, sc.res.describe_failures()
    assert codes == [0] * len(old), f"greeters exited with {codes} on SIGTERM"


def test_etcd_leader_killed(baseline, cluster):
    """kill -9 the etcd leader: calls go on from the selector cache, leases survive
    the election, and a node started after it is found."""
    s = baseline
    etcd = cluster.etcd
    leader = etcd.leader()
    assert leader is not None
    fresh = None
    missing: set[str] = set()
    try:
        with Scenario(s, "kill the etcd leader") as sc:
            time.sleep(2)
            t_kill = time.monotonic()
            leader.kill()
            new_leader = harness.wait_until(
                "a new etcd leader",
                lambda: (lambda m: m if m is not None and m is not leader else None)(etcd.leader()),
                timeout=20, every=0.1,
            )
            sc.note(f"killed leader {leader.name}; {new_leader.name} elected "
                    f"{time.monotonic() - t_kill:.1f}s later")
            fresh = s.start_greeter("h4")
            t = time.monotonic()
            s.wait_registered([fresh], timeout=20)
            sc.load.wait_for_node(fresh.tag, timeout=15)
            sc.note(f"a node started after the election answered through the gateway "
                    f"{time.monotonic() - t:.1f}s after its start")
            # The nodes registered before the kill renewed their leases through the
            # new leader: still listed well past a TTL after the kill.
            time.sleep(max(0.0, t_kill + TTL + SLACK - time.monotonic()))
            missing = {g.address for g in s.running()} - s.registered()
            sc.note("every node still registered a TTL after the kill" if not missing
                    else f"LOST registrations: {sorted(missing)}")
            time.sleep(1)
    finally:
        if not leader.running():
            etcd.restart(leader)
        if fresh is not None:
            fresh.proc.stop()
            s.forget(fresh)
    assert sc.res.failed == 0, sc.res.describe_failures()
    assert not missing, f"nodes lost their registration after the election: {missing}"


def test_nats_restart_jetstream(baseline, cluster):
    """Restart nats-server while numbered messages are published through micro
    (`--broker jetstream`: each publish acknowledged once stored) to a durable
    JetStream subscriber: every message arrives (duplicates counted)."""
    s = baseline
    nats = cluster.nats
    assert nats is not None
    topic, n_messages = "cluster.numbered", 60
    c1 = cluster.host("c1")
    # NATS with JetStream for both ends: a publish returns only once the server
    # has stored the message, so "published" means "will be delivered".
    env = s.env(c1, {"MICRO_BROKER": "jetstream"})
    sub = cluster.spawn("subscriber", c1, [s.micro, "subscribe", topic, "--durable",
                                            "cluster-test", "-o", "json"], env)

    def received() -> list[int]:
        """The numbers the subscriber printed (`-o json`: one message a line)."""
        out = []
        for line in sub.log_path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("body"), dict):
                out.append(doc["body"].get("n"))
        return out

    refused = [0]

    def publish(n: int, deadline: float) -> None:
        """`micro publish` on host c1, again while it fails (the server is down)."""
        while True:
            r = subprocess.run(
                [*c1.prefix, s.micro, "publish", topic, json.dumps({"n": n})],
                env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            )
            if r.returncode == 0:
                return
            refused[0] += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"publishing {n} kept failing: {r.stderr.strip()}")
            time.sleep(0.2)

    down: dict[str, float] = {}

    def restart() -> None:
        t = time.monotonic()
        nats.stop()
        time.sleep(1.0)
        nats.start()
        down["for"] = time.monotonic() - t

    restarter = threading.Thread(target=restart, name="nats-restart")
    try:
        with Scenario(s, "restart nats-server during a JetStream stream") as sc:
            # Subscribed once a probe (number 0) gets through.
            harness.wait_until(
                "the subscriber to get a probe",
                lambda: (publish(0, time.monotonic() + 10), 0 in received())[1],
                timeout=30, every=0.5,
            )
            deadline = time.monotonic() + 60
            for n in range(1, n_messages + 1):
                if n == n_messages // 3:
                    restarter.start()
                publish(n, deadline)
            restarter.join(timeout=30)
            try:
                harness.wait_until("every message at the subscriber",
                                   lambda: set(range(1, n_messages + 1)) <= set(received()),
                                   timeout=30, every=0.3)
            except harness.HarnessError:
                pass
            time.sleep(1)
            got = [n for n in received() if n]
            missing = sorted(set(range(1, n_messages + 1)) - set(got))
            sc.note(f"{n_messages} numbered `micro publish` ({refused[0]} refused while the "
                    f"server was down, and retried); nats-server down {down.get('for', 0):.1f}s")
            sc.note(f"the durable `micro subscribe` got {len(set(got))} distinct, "
                    f"{len(got) - len(set(got))} duplicates, missing {missing or 'none'}")
    finally:
        if restarter.is_alive():
            restarter.join(timeout=30)
        if not (nats.proc and nats.proc.alive()):
            nats.start()
        sub.stop()
    assert not missing, f"messages lost: {missing}\n{sub.log_text(3000)}"
    assert sc.res.failed == 0, sc.res.describe_failures()


def test_partition_gateway_host(baseline, cluster):
    """Cut the gateway's host off from every etcd member: it keeps routing from
    its cache, answering as fast as before; healed, it sees what changed meanwhile."""
    s = baseline
    net = cluster.network
    gw = cluster.host("gw")
    fresh = None
    t_cut = t_heal = None
    try:
        with Scenario(s, "partition the gateway's host from etcd") as sc:
            time.sleep(2)
            t_cut = time.monotonic()
            net.partition(gw, etcd_hosts(cluster))
            # A node registered during the partition: the gateway cannot know it.
            fresh = s.start_greeter("h4")
            s.wait_registered([fresh], timeout=20)
            time.sleep(max(0.0, t_cut + GATEWAY_CUT - time.monotonic()))
            t_heal = time.monotonic()
            net.heal(gw)
            sc.note(f"gw cut from etcd for {t_heal - t_cut:.1f}s")
            seen = sc.load.wait_for_node(fresh.tag, timeout=30, since=sc.load.now())
            sc.note(f"the node registered during the cut answered "
                    f"{seen - sc.load.snapshot().at(t_heal):.1f}s after healing")
            time.sleep(1)
            res = sc.stop()
            cut, heal = res.at(t_cut), res.at(t_heal)
            during = [r for r in res.requests if cut <= r.at < heal]
            quick = [r for r in during if r.ok and r.latency < 1.0]
            # What the load sends during the cut when every answer is quick.
            expected = (heal - cut) * sc.load.connections / sc.load.interval
            slowest = max((r.latency for r in during), default=0.0)
            serving = (f"requests started during the cut: {len(during)} ({len(quick)} answered "
                       f"within 1 s, of ~{expected:.0f} at the steady rate), slowest "
                       f"{slowest:.1f}s, failed {sum(not r.ok for r in during)}")
            sc.note(serving)
    finally:
        net.heal(gw)
        if fresh is not None:
            fresh.proc.stop()
            s.forget(fresh)
    # Answered before the heal (a request may start in the cut and end after it).
    before_heal = {r.node for r in during if r.ok and r.at + r.latency < heal}
    assert fresh.tag not in before_heal, \
        "the partition did not cut the gateway off (it routed to a node registered meanwhile)"
    problems = []
    if res.failed:
        problems.append(f"{res.failed} requests failed:\n{res.describe_failures()}")
    if len(quick) < 0.5 * expected or slowest > 2.0:
        problems.append(f"the gateway did not keep serving while cut off from etcd: {serving}")
    assert not problems, "\n".join(problems)


def test_partition_greeter_host(baseline, cluster):
    """Cut a greeter's host off from etcd: its lease expires and the gateway stops
    choosing it, with no failed request; healed, it registers again by itself."""
    s = baseline
    net = cluster.network
    victim = next(g for g in s.running() if g.host.name == "h1")
    gone = back = None
    try:
        with Scenario(s, "partition a greeter's host from etcd") as sc:
            time.sleep(2)
            net.partition(victim.host, etcd_hosts(cluster))
            try:
                gone = s.wait_unregistered(victim.address, TTL + SLACK + 5)
                sc.note(f"{victim.tag} left the registry {gone:.1f}s after the cut")
            except harness.HarnessError:
                sc.note(f"{victim.tag} still registered {TTL + SLACK + 5:g}s after the cut")
            t_gone = time.monotonic()
            time.sleep(3)
            t_heal = time.monotonic()
            net.heal(victim.host)
            back = s.wait_registered([victim], timeout=20)
            seen = sc.load.wait_for_node(victim.tag, timeout=15, since=sc.load.now())
            sc.note(f"healed: registered again {back:.1f}s later without a restart, answering "
                    f"{seen - sc.load.snapshot().at(t_heal):.1f}s after healing")
            time.sleep(1)
            res = sc.stop()
            unused = res.per_node(res.at(t_gone) + 1.5, res.at(t_heal))
            sc.note(f"answers while it was out of the registry: {dict(unused)}")
    finally:
        net.heal(victim.host)
    assert res.failed == 0, res.describe_failures()
    assert gone is not None and gone <= TTL + SLACK, sc.notes[0]
    assert victim.tag not in unused, "the gateway kept choosing a node that left the registry"
