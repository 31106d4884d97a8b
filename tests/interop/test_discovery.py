"""The `micro` CLI against real greeter processes found through the local
registry: two nodes appear in `micro list services` and `micro get service`,
`micro call` needs no address, `micro health`/`stats`/`stream` reach every node,
and `micro register`/`deregister` change what others see. Every test uses its
own registry directory (MICRO_REGISTRY_ADDRESS) so nothing else is visible."""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import TARGET


@pytest.fixture
def registry_env(tmp_path):
    env = dict(os.environ)
    env.update(
        {
            "MICRO_REGISTRY": "local",
            "MICRO_REGISTRY_ADDRESS": str(tmp_path / "registry"),
            "MICRO_REGISTER_TTL": "3s",
            "MICRO_REGISTER_INTERVAL": "1s",
        }
    )
    return env


def micro(env, *args, check=True):
    out = subprocess.run([str(TARGET / "micro"), *args], env=env, capture_output=True, text=True, timeout=30)
    if check:
        assert out.returncode == 0, f"micro {' '.join(args)} failed:\n{out.stderr}"
    return out


def node_count(env):
    out = micro(env, "get", "service", "greeter", "-o", "json", check=False)
    if out.returncode != 0:
        return 0
    return sum(len(s["nodes"]) for s in json.loads(out.stdout))


def wait_nodes(env, count, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if node_count(env) == count:
            return
        time.sleep(0.1)
    raise AssertionError(f"expected {count} greeter node(s) within {within}s, have {node_count(env)}")


@pytest.fixture
def two_greeters(registry_env):
    procs = [
        subprocess.Popen(
            [str(TARGET / "greeter"), "--server_address", "127.0.0.1:0"],
            env=registry_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        wait_nodes(registry_env, 2, 20)
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_list_and_get_show_both_nodes(two_greeters, registry_env):
    listed = json.loads(micro(registry_env, "list", "services", "-o", "json").stdout)
    assert [(s["name"], len(s["nodes"])) for s in listed] == [("greeter", 2)]
    table = micro(registry_env, "list", "services").stdout
    assert "greeter" in table and "2" in table

    record = json.loads(micro(registry_env, "get", "service", "greeter", "-o", "json").stdout)[0]
    assert {e["name"] for e in record["endpoints"]} == {"Greeter.Hello", "Greeter.Stream"}
    hello = next(e for e in record["endpoints"] if e["name"] == "Greeter.Hello")
    assert hello["request"]["schema"]["properties"]["name"]["type"] == "string"
    text = micro(registry_env, "get", "service", "greeter").stdout
    assert "Endpoint: Greeter.Hello" in text and "HelloRequest" in text


def test_call_stream_health_stats_without_an_address(two_greeters, registry_env):
    out = micro(registry_env, "call", "greeter", "Greeter.Hello", '{"name":"John"}', "-o", "json")
    assert json.loads(out.stdout) == {"message": "Hello John"}
    lines = micro(registry_env, "stream", "greeter", "Greeter.Stream", '{"name":"A","count":2}', "-o", "json").stdout
    assert [json.loads(l)["sequence"] for l in lines.splitlines()] == [1, 2]
    health = json.loads(micro(registry_env, "health", "greeter", "-o", "json").stdout)
    assert [n["status"] for n in health] == ["ok", "ok"]
    stats = json.loads(micro(registry_env, "stats", "greeter", "-o", "json").stdout)
    assert len(stats) == 2 and all("stats" in s for s in stats)


def test_killed_node_leaves_and_stopped_node_deregisters(two_greeters, registry_env):
    a, b = two_greeters
    a.send_signal(signal.SIGKILL)
    a.wait()
    wait_nodes(registry_env, 1, 4)  # within the 3 s TTL (+1 s slack)
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=15) == 0
    wait_nodes(registry_env, 0, 0.5)  # a clean stop deregisters at once
    out = micro(registry_env, "call", "greeter", "Greeter.Hello", '{"name":"x"}', check=False)
    assert out.returncode != 0
    assert "micro list services" in out.stderr


def test_register_and_deregister_by_hand(registry_env):
    record = {"name": "foreign", "version": "1.0", "nodes": [{"id": "foreign-1", "address": "127.0.0.1:1", "metadata": {"protocol": "http-json"}}]}
    micro(registry_env, "register", "service", json.dumps(record))
    listed = json.loads(micro(registry_env, "list", "services", "-o", "json").stdout)
    assert [(s["name"], s["version"]) for s in listed] == [("foreign", "1.0")]
    micro(registry_env, "deregister", "service", json.dumps(record))
    assert json.loads(micro(registry_env, "list", "services", "-o", "json").stdout) == []
    bad = micro(registry_env, "register", "service", "{not json", check=False)
    assert bad.returncode != 0 and "example" in bad.stderr
