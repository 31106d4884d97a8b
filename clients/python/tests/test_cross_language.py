"""Python and the other languages of micro meet: a Python endpoint called through
the API gateway (plain HTTP) and by the Rust CLI, and a Python subscriber receiving
what the TypeScript client publishes (clients/typescript, built by its test.sh)."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import MicroServer, binary, eventually

import micro

TS_CLIENT = Path(__file__).resolve().parents[2] / "typescript"


@pytest.fixture
def doubler(server: MicroServer):
    svc = micro.Service("pyworker", proxy=server.address)

    @svc.handle("Worker.Double")
    def double(req: dict) -> dict:
        return {"doubled": req["n"] * 2}

    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status, json.loads(rsp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_python_endpoint_through_the_gateway_and_the_rust_cli(server: MicroServer, doubler) -> None:
    url = f"http://{server.api_address}/pyworker/worker/double"
    status, answer = eventually(lambda: (r := post(url, {"n": 21}))[0] == 200 and r)
    assert status == 200
    assert answer == {"doubled": 42}
    status, answer = post(url, {})
    assert status == 500, answer  # the handler's KeyError, as the shared error JSON
    assert set(answer) == {"id", "code", "detail", "status"}

    out = subprocess.run(
        [str(binary("micro")), "call", "--proxy", server.address, "pyworker", "Worker.Double", '{"n": 5}'],
        capture_output=True, text=True, timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"doubled": 10}


def test_python_receives_what_typescript_publishes(server: MicroServer, client: micro.Client) -> None:
    node = shutil.which("node")
    if not (TS_CLIENT / "node_modules").is_dir() or node is None:
        pytest.fail("clients/typescript is not installed: run clients/typescript/test.sh first")
    got: queue.Queue = queue.Queue()
    with client.subscribe("cross.language", got.put):
        script = (
            f"import {{ Client }} from {json.dumps(str(TS_CLIENT / 'dist' / 'index.js'))};"
            f"const c = new Client({{ address: {json.dumps(server.address)} }});"
            "const id = await c.publish('cross.language', { from: 'typescript', n: 7 });"
            "console.log(id); c.close();"
        )
        out = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        message = got.get(timeout=10)
    assert message.message == {"from": "typescript", "n": 7}
    assert message.id == out.stdout.strip()
