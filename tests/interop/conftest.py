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


def etcd_binary():
    """Debian's etcd (package etcd-server), if installed."""
    import shutil  # noqa: PLC0415

    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None


def etcd_answers(address: str) -> bool:
    import urllib.request  # noqa: PLC0415

    req = urllib.request.Request(f"http://{address}/v3/kv/range", data=b'{"key":"AA=="}')
    try:
        with urllib.request.urlopen(req, timeout=0.5) as rsp:
            return rsp.status == 200
    except OSError:
        return False


@pytest.fixture
def etcd(tmp_path):
    """An etcd of this test on loopback ports, with its data in tmp_path; yields its
    client address (host:port). Skipped, saying why, only if etcd is not installed
    (scripts/etcd-server.sh installs it; CI does)."""
    binary = etcd_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("etcd is not installed (CI is set): run scripts/etcd-server.sh")
        pytest.skip("etcd is not installed: run scripts/etcd-server.sh (apt-get install etcd-server)")
    client, peer = free_port(), free_port()
    log = open(tmp_path / "etcd.log", "w")
    proc = subprocess.Popen(
        [
            binary, "--name=micro-test", f"--data-dir={tmp_path / 'etcd-data'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=micro-test=http://127.0.0.1:{peer}",
            "--log-level=warn",
        ],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    address = f"127.0.0.1:{client}"
    try:
        deadline = time.monotonic() + 20
        while not etcd_answers(address):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"etcd did not start:\n{(tmp_path / 'etcd.log').read_text()}")
            time.sleep(0.05)
        yield address
    finally:
        proc.kill()
        proc.wait()
        log.close()
