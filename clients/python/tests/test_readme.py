"""The README's examples, executed against a real `micro server` and greeter, so
they never rot. Blocks are found by the `<!-- example: NAME -->` comment before
them; an `<!-- output: NAME -->` block is what the example must print."""

from __future__ import annotations

import ast
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MicroServer, binary, eventually

import micro

README = Path(__file__).resolve().parents[1] / "README.md"


def block(kind: str, name: str) -> str:
    text = README.read_text()
    m = re.search(rf"<!-- {kind}: {name}\b[^>]*-->\s*```\w*\n(.*?)```", text, re.S)
    assert m, f"README has no {kind} block {name!r}"
    return m.group(1)


def run_example(tmp_path: Path, name: str, server: MicroServer) -> subprocess.CompletedProcess:
    script = tmp_path / f"{name}.py"
    script.write_text(block("example", name))
    env = {**__import__("os").environ, "MICRO_PROXY": server.address}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)


def test_the_client_example(tmp_path: Path, server: MicroServer, greeter) -> None:
    out = run_example(tmp_path, "client", server)
    assert out.returncode == 0, out.stderr
    assert out.stdout == block("output", "client")


def test_the_aio_example(tmp_path: Path, server: MicroServer, greeter) -> None:
    out = run_example(tmp_path, "aio", server)
    assert out.returncode == 0, out.stderr
    # Printed dicts, compared as values: the key order of a JSON object is not
    # kept through google.protobuf.Struct (a map).
    assert [ast.literal_eval(line) for line in out.stdout.splitlines()] == [
        {"message": "Hello John"},
        {"message": "Hello John", "sequence": 1},
        {"message": "Hello John", "sequence": 2},
        {"message": "Hello John", "sequence": 3},
    ]


def test_the_service_example(tmp_path: Path, server: MicroServer, client: micro.Client) -> None:
    script = tmp_path / "service.py"
    script.write_text(block("example", "service"))
    env = {**__import__("os").environ, "MICRO_PROXY": server.address}
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        eventually(lambda: client.registry.get_service("pyworker"))
        # As the README says: the Rust CLI calls it.
        out = subprocess.run(
            [str(binary("micro")), "call", "pyworker", "Worker.Run", '{"job": 7}'],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"done": 7}
        with pytest.raises(micro.BadRequest) as err:
            client.call("pyworker", "Worker.Run", {})
        assert (err.value.id, err.value.detail) == ("pyworker", "job is required")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    with pytest.raises(micro.NotFound):
        client.registry.get_service("pyworker")
