"""Fixtures for interop tests: real micro binaries on loopback ports, and Python
gRPC stubs generated from the protos with stock grpcio-tools (no micro code)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


class Greeter:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc = proc
        self.port = port
        self.address = f"127.0.0.1:{port}"

    def stop(self) -> int:
        """Stops gracefully (SIGTERM) and returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(autouse=True)
def isolated_discovery(tmp_path, monkeypatch):
    """Every process a test starts uses a private local registry and never sends
    mDNS: nothing leaves the machine, and tests do not see each other's nodes."""
    monkeypatch.setenv("MICRO_MDNS_INTERFACES", "none")
    monkeypatch.setenv("MICRO_REGISTRY_ADDRESS", str(tmp_path / "registry"))


@pytest.fixture
def greeter():
    binary = TARGET / "greeter"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `cargo build --workspace` first")
    port = free_port()
    proc = subprocess.Popen(
        [str(binary), "--server_address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    g = Greeter(proc, port)
    try:
        wait_for_port(port, proc)
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    """Compiles greeter.proto and debug.proto with grpcio-tools and imports them."""
    from grpc_tools import protoc  # noqa: PLC0415 (import where used: optional dep)

    out = tmp_path_factory.mktemp("stubs")
    protos = [
        (ROOT / "examples/greeter/proto", "greeter.proto"),
        (ROOT / "proto", "micro/debug/v1/debug.proto"),
    ]
    for include, proto in protos:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{include}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(include / proto),
            ]
        )
        assert code == 0, f"protoc failed on {proto}"
    sys.path.insert(0, str(out))
    import greeter_pb2  # noqa: PLC0415
    import greeter_pb2_grpc  # noqa: PLC0415
    from micro.debug.v1 import debug_pb2, debug_pb2_grpc  # noqa: PLC0415

    return {
        "greeter_pb2": greeter_pb2,
        "greeter_pb2_grpc": greeter_pb2_grpc,
        "debug_pb2": debug_pb2,
        "debug_pb2_grpc": debug_pb2_grpc,
    }
