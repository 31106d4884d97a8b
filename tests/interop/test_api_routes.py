"""`micro api --config routes.yaml`: a real gateway with a routes file in front of
two greeter versions, an HTTP upstream and a WebSocket upstream: canary split,
header routing, params, CORS, auth, event and http/web routes, and a live reload
that keeps the last good routes when the file turns bad."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import subprocess
import threading
import time

import pytest

from conftest import TARGET, free_port, wait_for_port
from test_api import WAIT, request

SECRET = "routes-test-secret"

ROUTES = """
routes:
  - path: /hi/{name}
    method: [GET]
    headers: {x-canary: "1"}
    service: greeter@v2
    endpoint: Greeter.Hello
  - path: /hi/{name}
    method: [GET]
    service: greeter
    endpoint: Greeter.Hello
    split:
      greeter@v2: 20%
      greeter@v1: 80%
    cors: {origins: ["https://app.example.com"], credentials: true}
  - path: /private/hello
    method: POST
    service: greeter@v1
    endpoint: Greeter.Hello
    auth: {required: true, scopes: [greeter.read]}
  - path: /orders
    method: POST
    handler: event
    topic: orders
  - path: /files/{rest*}
    handler: http
    service: files
    rewrite: /static/{rest*}
  - path: /ws
    handler: web
    service: wsecho
"""


def jwt(claims: dict) -> str:
    """An HS256 JWT signed with SECRET."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def start(args, env=None):
    return subprocess.Popen(
        args, env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Files(http.server.BaseHTTPRequestHandler):
    """A plain HTTP service: echoes the path it was asked for."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps({"path": self.path, "forwarded_for": self.headers.get("X-Forwarded-For")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def register(name: str, address: str):
    record = {"name": name, "nodes": [{"id": f"{name}-1", "address": address}]}
    out = subprocess.run([str(TARGET / "micro"), "register", "service", json.dumps(record)],
                         capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def stack(tmp_path):
    """Two greeter versions, a plain HTTP service, a WebSocket echo service and
    `micro api` with the routes file and the auth wrapper."""
    from websockets.sync.server import serve  # noqa: PLC0415

    procs = []
    for version, greeting in [("v1", "Hello"), ("v2", "Hi")]:
        port = free_port()
        p = start([str(TARGET / "greeter"), "--server_address", f"127.0.0.1:{port}"],
                  {"MICRO_SERVER_VERSION": version, "GREETER_GREETING": greeting})
        wait_for_port(port, p)
        procs.append(p)
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    register("files", f"127.0.0.1:{files.server_address[1]}")

    def echo(ws):
        for message in ws:
            ws.send(f"echo {message}")

    ws_server = serve(echo, "127.0.0.1", 0)
    threading.Thread(target=ws_server.serve_forever, daemon=True).start()
    register("wsecho", f"127.0.0.1:{ws_server.socket.getsockname()[1]}")

    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    port = free_port()
    api = start([str(TARGET / "micro"), "api", "--address", f"127.0.0.1:{port}", "--config", str(routes),
                 "--wrappers", "auth", "--wrapper", f"auth.secret={SECRET}",
                 # Every endpoint is public at the gateway; the route's own `auth`
                 # asks for a token and a scope where it says so.
                 "--wrapper", 'auth.rules=[{"endpoint":"*","public":true}]'])
    procs.append(api)
    wait_for_port(port, api)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + WAIT
    while request(f"{base}/hi/x", headers={"x-canary": "1"})[0] != 200:
        assert time.monotonic() < deadline, "greeter v2 never became routable"
        time.sleep(0.1)
    try:
        yield base, routes, api
    finally:
        files.shutdown()
        ws_server.shutdown()
        for p in procs:
            stop(p)


def message(base, path, **kw):
    status, _, body = request(f"{base}{path}", **kw)
    assert status == 200, (status, body)
    return json.loads(body)["message"]


def test_canary_split_and_header_routing(stack):
    base, _, _ = stack
    assert message(base, "/hi/Ann", headers={"x-canary": "1"}) == "Hi Ann"
    answers = [message(base, "/hi/Bob") for _ in range(200)]
    v2 = answers.count("Hi Bob")
    assert answers.count("Hello Bob") + v2 == 200
    # 20% of 200 is 40; a binomial spread of ±3 sd is about ±17.
    assert 15 <= v2 <= 70, v2
    status, headers, _ = request(f"{base}/hi/Bob", method="DELETE")
    assert status == 405 and "GET" in headers["Allow"]


def test_route_cors_and_auth(stack):
    base, _, _ = stack
    pre = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
    status, headers, _ = request(f"{base}/hi/x", method="OPTIONS", headers=pre)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    status, _, _ = request(f"{base}/hi/x", method="OPTIONS", headers={**pre, "Origin": "https://evil.example"})
    assert status == 403

    status, _, body = request(f"{base}/private/hello", {"name": "P"})
    assert status == 401, body
    now = int(time.time())
    weak = jwt({"sub": "eve", "exp": now + 60, "scope": "other"})
    status, _, body = request(f"{base}/private/hello", {"name": "P"}, headers={"Authorization": f"Bearer {weak}"})
    assert status == 403 and "greeter.read" in json.loads(body)["detail"], body
    good = jwt({"sub": "ann", "exp": now + 60, "scope": "greeter.read"})
    assert message(base, "/private/hello", body={"name": "P"}, headers={"Authorization": f"Bearer {good}"}) == "Hello P"
    forged = jwt({"sub": "ann", "exp": now + 60, "scope": "greeter.read"})[:-4] + "AAAA"
    status, _, _ = request(f"{base}/private/hello", {"name": "P"}, headers={"Authorization": f"Bearer {forged}"})
    assert status == 401


def test_event_http_and_web_routes(stack):
    base, _, _ = stack
    status, _, body = request(f"{base}/orders", {"id": 7})
    assert status == 202 and len(json.loads(body)["id"]) == 36
    status, _, body = request(f"{base}/orders", b"{bad")
    assert status == 400

    status, _, body = request(f"{base}/files/a/b.txt?x=1")
    assert status == 200, body
    echoed = json.loads(body)
    assert echoed["path"] == "/static/a/b.txt?x=1" and echoed["forwarded_for"] == "127.0.0.1"

    from websockets.sync.client import connect  # noqa: PLC0415

    with connect(base.replace("http://", "ws://") + "/ws", open_timeout=WAIT) as ws:
        ws.send("ping")
        assert ws.recv(timeout=WAIT) == "echo ping"


def test_live_reload_keeps_the_last_good_routes(stack):
    base, routes, api = stack
    assert message(base, "/hi/R", headers={"x-canary": "1"}) == "Hi R"
    # A bad file: rejected with its line; the routes in effect stay.
    routes.write_text("routes:\n  - path: /x\n    handler: nope\n")
    time.sleep(1.0)
    assert message(base, "/hi/R", headers={"x-canary": "1"}) == "Hi R"
    # A good change takes effect without a restart (and without dropping the gateway).
    routes.write_text("routes:\n  - path: /renamed/{name}\n    service: greeter@v1\n    endpoint: Greeter.Hello\n")
    deadline = time.monotonic() + WAIT
    while request(f"{base}/renamed/R")[0] != 200:
        assert time.monotonic() < deadline, "the new routes never took effect"
        time.sleep(0.1)
    assert message(base, "/renamed/R") == "Hello R"
    assert api.poll() is None
    stop(api)
    assert "routes.yaml:3: unknown handler" in api.stderr.read()


def test_the_docs_example_routes_file_loads(tmp_path):
    """docs/api.md's example routes file is valid: `micro api --config` starts with it."""
    from conftest import ROOT  # noqa: PLC0415

    text = (ROOT / "docs" / "api.md").read_text()
    example = text.split("```yaml routes\n", 1)[1].split("```", 1)[0]
    routes = tmp_path / "routes.yaml"
    routes.write_text(example)
    port = free_port()
    api = start([str(TARGET / "micro"), "api", "--address", f"127.0.0.1:{port}", "--config", str(routes)])
    try:
        wait_for_port(port, api)
        status, _, _ = request(f"http://127.0.0.1:{port}/health")
        assert status == 200
    finally:
        stop(api)
    assert "routes=6" in api.stderr.read()
