"""Pub/sub end to end with real processes: `micro subscribe greeter.hello` shows
the events that `micro call greeter Greeter.Hello` causes, `micro publish`
reaches subscribers with its headers, queue groups share messages, and the
`subscriber` example counts events — with no broker installed (the default HTTP
broker) and with MICRO_BROKER=nats against a nats-server the test starts on a
loopback port."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import TARGET, free_port, wait_for_port


@pytest.fixture(params=["http", "nats"])
def broker_env(request, tmp_path, monkeypatch):
    if request.param == "nats":
        binary = shutil.which("nats-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("nats-server is missing: scripts/test.sh installs it")
            pytest.skip("nats-server is not installed")
        port = free_port()
        proc = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "nats")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, proc)
        monkeypatch.setenv("MICRO_BROKER", "nats")
        monkeypatch.setenv("MICRO_BROKER_ADDRESS", f"nats://127.0.0.1:{port}")
        yield "nats"
        proc.terminate()
        proc.wait(timeout=10)
    else:
        monkeypatch.delenv("MICRO_BROKER", raising=False)
        yield "http"


class Lines:
    """Collects a process's stdout lines in the background."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, count, within=10.0):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and len(self.lines) < count:
            time.sleep(0.05)
        return list(self.lines)


def start(*args):
    return subprocess.Popen(
        [str(TARGET / args[0]), *args[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def subscribe(*extra):
    proc = start("micro", "subscribe", "greeter.hello", "-o", "json", *extra)
    # Ready once it says so on stderr.
    line = proc.stderr.readline()
    assert "subscribed to greeter.hello" in line, line
    return proc, Lines(proc)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def micro(*args):
    out = subprocess.run([str(TARGET / "micro"), *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def greeter_node(broker_env):
    proc = start("greeter", "--server_address", "127.0.0.1:0")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = subprocess.run([str(TARGET / "micro"), "list", "services", "-o", "json"], capture_output=True, text=True)
        if out.returncode == 0 and any(s["name"] == "greeter" for s in json.loads(out.stdout)):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("greeter did not register")
    yield proc
    stop(proc)


def test_subscribe_sees_the_events_calls_cause(greeter_node, broker_env):
    proc, lines = subscribe()
    try:
        micro("call", "greeter", "Greeter.Hello", '{"name":"John"}')
        got = lines.wait_for(1)
        assert got, "no event arrived"
        event = json.loads(got[0])
        assert event["topic"] == "greeter.hello"
        assert event["body"] == {"name": "John", "message": "Hello John"}
        assert event["headers"]["micro-from-service"] == "greeter"
        assert event["headers"]["micro-id"]
    finally:
        assert stop(proc) == 0


def test_publish_reaches_subscribers_with_headers(broker_env):
    proc, lines = subscribe()
    try:
        out = micro("publish", "greeter.hello", '{"name":"X","message":"hi"}', "-m", "x-trace=t1", "-o", "json")
        published = json.loads(out)
        event = json.loads(lines.wait_for(1)[0])
        assert event["body"] == {"name": "X", "message": "hi"}
        assert event["headers"]["x-trace"] == "t1"
        assert event["headers"]["micro-id"] == published["id"]
    finally:
        stop(proc)


def test_queue_group_shares_messages(broker_env):
    a, a_lines = subscribe("--queue", "q")
    b, b_lines = subscribe("--queue", "q")
    try:
        for i in range(10):
            micro("publish", "greeter.hello", json.dumps({"name": str(i), "message": "m"}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(a_lines.lines) + len(b_lines.lines) < 10:
            time.sleep(0.05)
        names = sorted(json.loads(l)["body"]["name"] for l in a_lines.lines + b_lines.lines)
        assert names == sorted(str(i) for i in range(10)), "each message exactly once in the group"
    finally:
        stop(a)
        stop(b)


def test_subscriber_example_counts_greetings(greeter_node, broker_env):
    counter = start("subscriber")
    log = Lines(counter)  # tracing logs go to stdout
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("service started" in l for l in log.lines):
            time.sleep(0.05)
        for _ in range(3):
            micro("call", "greeter", "Greeter.Hello", '{"name":"Ann"}')
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("count=3" in l for l in log.lines):
            time.sleep(0.05)
        assert any("count=3" in l and "Hello Ann" in l for l in log.lines), log.lines
    finally:
        assert stop(counter) == 0
