"""Fixtures: a real `micro server` and a real Rust `greeter` on free loopback ports,
each test with its own registry directory and data directory, and nothing sent
by mDNS. Processes are stopped by their own PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import micro

ROOT = Path(__file__).resolve().parents[3]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug"
WAIT = 15.0  # seconds to wait for something that happens over loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str) -> Path:
    path = TARGET / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build -p micro-cli -p greeter` first")
    return path


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s:\n{log.read_text()}")


def eventually(check, timeout: float = WAIT, interval: float = 0.05):
    """Calls check() until it returns a truthy value (returned) or the time runs out
    (the last exception, or an AssertionError, is raised)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            error: BaseException = AssertionError(f"{check} stayed falsy for {timeout}s")
        except Exception as e:  # noqa: BLE001 (kept to report at the end)
            error = e
        if time.monotonic() > deadline:
            raise error
        time.sleep(interval)


class Process:
    """A binary of the test, logging to a file, stopped gracefully by PID."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        self._log_file = open(log, "a")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


class MicroServer(Process):
    def __init__(self, data_dir: Path, log: Path, port: int | None = None):
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.api_port = free_port()
        self.api_address = f"127.0.0.1:{self.api_port}"
        args = [
            str(binary("micro")), "server",
            "--proxy_address", self.address,
            "--api_address", self.api_address,
            "--web_address", f"127.0.0.1:{free_port()}",
            "--data_dir", str(data_dir),
        ]  # fmt: skip
        super().__init__(args, log)
        try:
            wait_for_port(self.port, self.proc, log)
        except BaseException:
            self.stop()
            raise


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private registry directory per test, no mDNS, and no proxy from outside."""
    monkeypatch.setenv("MICRO_MDNS_INTERFACES", "none")
    monkeypatch.setenv("MICRO_REGISTRY_ADDRESS", str(tmp_path / "registry"))
    for name in ("MICRO_PROXY", "MICRO_REGISTRY", "MICRO_BROKER", "MICRO_CONFIG", "MICRO_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MicroServer]:
    s = MicroServer(tmp_path / "data", tmp_path / "micro-server.log")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def client(server: MicroServer) -> Iterator[micro.Client]:
    with micro.Client(server.address) as c:
        yield c


@pytest.fixture
def greeter(server: MicroServer, client: micro.Client, tmp_path: Path) -> Iterator[Process]:
    """A Rust greeter, registered (the proxy sees a node of it)."""
    port = free_port()
    g = Process([str(binary("greeter")), "--server_address", f"127.0.0.1:{port}"], tmp_path / "greeter.log")
    try:
        wait_for_port(port, g.proc, g.log)
        eventually(lambda: any(r.nodes for r in client.registry.get_service("greeter")))
        yield g
    finally:
        g.stop()
