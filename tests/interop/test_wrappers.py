"""Wrappers switched on with no recompile, end to end with the real binaries:
`MICRO_WRAPPERS=metrics,trace,ratelimit greeter` answers 429 over its rate and
serves Prometheus counters on its port; a call through the greeter and the event
it publishes to the subscriber example carry one trace id on both sides; spans
reach an OTLP collector; `auth` refuses forged tokens; `chaos` is switched on and
off by editing the config file of the running greeter."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from conftest import TARGET, free_port, wait_for_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Node:
    """A service binary on a loopback port, stopped with SIGTERM."""

    def __init__(self, binary, *args, env=None):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(TARGET / binary), "--server_address", self.address, *args],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for_port(self.port, self.proc)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read()


@pytest.fixture
def nodes():
    started = []

    def start(binary, *args, env=None):
        node = Node(binary, *args, env=env)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def http(method, url, body=None, headers=None):
    """(status, body text) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def hello(node, name="John", headers=None):
    return http(
        "POST",
        f"http://{node.address}/greeter.Greeter/Hello",
        json.dumps({"name": name}).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


def micro(*args, env=None):
    return subprocess.run(
        [str(TARGET / "micro"), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def eventually(check, within=10.0, what="the condition"):
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not hold within {within}s")
        time.sleep(0.1)


def spans(node, trace_id=TRACE_ID):
    status, body = http("GET", f"http://{node.address}/debug/traces?trace_id={trace_id}")
    assert status == 200, body
    return [s for t in json.loads(body)["traces"] for s in t["spans"]]


def test_micro_wrappers_env_switches_on_metrics_trace_and_ratelimit(nodes):
    greeter = nodes(
        "greeter",
        env={"MICRO_WRAPPERS": "metrics,trace,ratelimit", "MICRO_WRAPPER_RATELIMIT_RATE": "3"},
    )
    codes = [hello(greeter)[0] for _ in range(8)]
    assert codes[:3] == [200, 200, 200], codes
    assert codes[-1] == 429, codes
    status, body = hello(greeter)
    assert status == 429
    err = json.loads(body)
    assert err["code"] == 429 and err["status"] == "Too Many Requests", err
    assert "rate limit of Greeter.Hello" in err["detail"], err

    status, text = http("GET", f"http://{greeter.address}/metrics")
    assert status == 200
    counts = {}
    for line in text.splitlines():
        if line.startswith('micro_server_requests_total{service="greeter",endpoint="Greeter.Hello"'):
            code = line.split('code="')[1].split('"')[0]
            counts[code] = int(float(line.rsplit(" ", 1)[1]))
    # metrics is outermost: it counts what ratelimit refused too.
    assert counts.get("200", 0) == codes.count(200), (counts, codes)
    assert counts.get("429", 0) == codes.count(429) + 1, (counts, codes)
    assert "# TYPE micro_server_request_duration_seconds histogram" in text


def test_a_call_and_its_event_carry_one_trace_id_across_two_services(nodes):
    env = {"MICRO_WRAPPERS": "trace"}
    subscriber = nodes("subscriber", env=env)
    greeter = nodes("greeter", env=env)
    # The subscriber subscribed before it registered; the greeter finds it by the
    # registry: give the HTTP broker a moment to see it.
    time.sleep(0.5)
    out = micro("call", "greeter", "Greeter.Hello", '{"name":"John"}', "-m", f"traceparent={TRACEPARENT}")
    assert out.returncode == 0, out.stderr

    sent = {s["kind"]: s for s in spans(greeter)}
    assert set(sent) == {"server", "producer"}, sent
    assert sent["server"]["parent_span_id"] == "00f067aa0ba902b7"
    assert sent["producer"]["parent_span_id"] == sent["server"]["span_id"]

    received = eventually(lambda: spans(subscriber), what="the subscriber's consumer span")
    assert [s["kind"] for s in received] == ["consumer"], received
    consumer = received[0]
    assert consumer["trace_id"] == TRACE_ID
    assert consumer["parent_span_id"] == sent["producer"]["span_id"]
    assert consumer["name"] == "process greeter.hello"


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP JSON collector that keeps what it receives."""

    received = []

    def do_POST(self):  # noqa: N802 (the stdlib's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_spans_are_exported_to_the_otlp_endpoint(nodes):
    Collector.received = []
    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        greeter = nodes(
            "greeter",
            env={
                "MICRO_WRAPPERS": "trace",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
                "OTEL_SERVICE_NAME": "greeter-under-test",
            },
        )
        assert hello(greeter, headers={"traceparent": TRACEPARENT})[0] == 200
        eventually(lambda: Collector.received, what="an OTLP export")
    finally:
        server.shutdown()
    path, content_type, doc = Collector.received[0]
    assert path == "/v1/traces" and content_type == "application/json"
    resource = doc["resourceSpans"][0]
    attributes = {a["key"]: a["value"] for a in resource["resource"]["attributes"]}
    assert attributes["service.name"] == {"stringValue": "greeter-under-test"}
    exported = [s for scope in resource["scopeSpans"] for s in scope["spans"]]
    server_span = next(s for s in exported if s["name"] == "Greeter.Hello")
    assert server_span["traceId"] == TRACE_ID
    assert server_span["parentSpanId"] == "00f067aa0ba902b7"
    assert server_span["kind"] == 2  # SPAN_KIND_SERVER


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict, secret: bytes) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


def test_auth_accepts_signed_tokens_and_api_keys_and_refuses_forged_ones(nodes, tmp_path):
    secret = b"a secret shared by the issuer and the greeter"
    (tmp_path / "jwt.key").write_bytes(secret)
    greeter = nodes(
        "greeter",
        "--wrappers", "auth",
        "--wrapper", f"auth.secret_file={tmp_path / 'jwt.key'}",
        "--wrapper", "auth.api_keys=demo-key:robot:greet",
    )
    good = hs256({"sub": "alice", "exp": int(time.time()) + 300}, secret)
    forged = hs256({"sub": "alice", "exp": int(time.time()) + 300}, b"somebody else's key")
    expired = hs256({"sub": "alice", "exp": int(time.time()) - 3600}, secret)

    assert hello(greeter, headers={"Authorization": f"Bearer {good}"})[0] == 200
    assert hello(greeter, headers={"Authorization": "Bearer demo-key"})[0] == 200
    for headers, says in [
        ({}, ""),
        ({"Authorization": f"Bearer {forged}"}, "signature"),
        ({"Authorization": f"Bearer {expired}"}, "expired"),
        ({"Authorization": "Bearer wrong-key"}, ""),
    ]:
        status, body = hello(greeter, headers=headers)
        err = json.loads(body)
        assert status == 401 and err["code"] == 401 and err["status"] == "Unauthorized", (headers, body)
        assert says in err["detail"].lower(), (headers, err)
        # The token never comes back in the answer.
        assert forged not in body and expired not in body
    # Health checks stay open.
    out = micro("health", "greeter", "-o", "json")
    assert out.returncode == 0, out.stderr


def test_editing_the_config_file_switches_chaos_in_the_running_greeter(nodes, tmp_path):
    config = tmp_path / "greeter.yaml"

    def write(percent):
        staged = tmp_path / "greeter.yaml.new"
        staged.write_text(f"micro:\n  wrappers: [chaos]\n  wrapper:\n    chaos: {{error_percent: {percent}}}\n")
        staged.replace(config)

    write(0)
    greeter = nodes("greeter", "--config_file", str(config))
    assert hello(greeter)[0] == 200
    write(100)
    eventually(lambda: hello(greeter)[0] == 503, within=5, what="chaos switched on")
    body = json.loads(hello(greeter)[1])
    assert body["detail"] == "chaos: injected error (error_percent=100)", body
    write(0)
    eventually(lambda: hello(greeter)[0] == 200, within=5, what="chaos switched off")
