"""Dynamic config end to end with the real binaries: `micro config` against a real
etcd, and the greeter's greeting changed live through etcd, the config file and the
environment."""

import json
import os
import subprocess
import time

from conftest import TARGET, free_port, wait_for_port

TIMEOUT = 30


def micro(*args, env=None):
    return subprocess.run(
        [str(TARGET / "micro"), *args],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT,
    )


def hello(address: str) -> str:
    import urllib.request  # noqa: PLC0415

    req = urllib.request.Request(
        f"http://{address}/greeter.Greeter/Hello",
        data=b'{"name":"John"}',
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as rsp:
        return json.load(rsp)["message"]


def answers_within(address: str, want: str, limit: float, after: str):
    deadline = time.monotonic() + limit
    got = None
    while time.monotonic() < deadline:
        got = hello(address)
        if got == want:
            return
        time.sleep(0.02)
    raise AssertionError(f"after {after}: the greeter still says {got!r} after {limit}s, not {want!r}")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICRO_") or k in (
        "MICRO_MDNS_INTERFACES", "MICRO_REGISTRY_ADDRESS")}
    env.update(extra)
    return env


def test_cli_config_set_get_del_watch_against_etcd(etcd):
    env = clean_env(MICRO_CONFIG="etcd", MICRO_CONFIG_ADDRESS=etcd)
    out = micro("config", "set", "greeter.greeting", "Hi", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == 'set greeter.greeting = "Hi" in etcd:/micro/config/\n'
    # JSON values stay JSON; anything else is a string.
    assert micro("config", "set", "greeter.limits", '{"max": 3}', "-o", "json", env=env).stdout == \
        '{"path":"greeter.limits","value":{"max":3}}\n'
    out = micro("config", "get", "greeter", "-o", "json", env=env)
    assert json.loads(out.stdout) == {"greeting": "Hi", "limits": {"max": 3}}, out.stderr

    watch = subprocess.Popen(
        [str(TARGET / "micro"), "config", "watch", "greeter.greeting", "-o", "json"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # First the current value, then each change.
        assert json.loads(watch.stdout.readline()) == {"path": "greeter.greeting", "value": "Hi"}
        assert micro("config", "set", "greeter.greeting", "Hola", env=env).returncode == 0
        assert json.loads(watch.stdout.readline()) == {"path": "greeter.greeting", "value": "Hola"}
        assert micro("config", "del", "greeter.greeting", env=env).returncode == 0
        assert json.loads(watch.stdout.readline()) == {"path": "greeter.greeting", "value": None}
    finally:
        watch.terminate()
        assert watch.wait(timeout=10) == 0, watch.stderr.read()

    out = micro("config", "get", "greeter.greeting", env=env)
    assert out.returncode == 1
    assert "greeter.greeting is not set in etcd:/micro/config/" in out.stderr, out.stderr


def test_cli_config_without_a_running_server_says_what_to_do():
    # The default store is the config service of `micro server` on 127.0.0.1:8081.
    out = micro("config", "get", "greeter.greeting", env=clean_env())
    assert out.returncode == 1
    assert "127.0.0.1:8081" in out.stderr and "micro server" in out.stderr, out.stderr
    assert "MICRO_CONFIG_ADDRESS" in out.stderr, out.stderr
    # Naming the store explicitly says the same.
    out = micro("config", "get", "x", "--config", "service", env=clean_env())
    assert out.returncode == 1 and "127.0.0.1:8081" in out.stderr, out.stderr


def test_greeter_greeting_from_file_etcd_and_env_live(etcd, tmp_path):
    """The issue's "done means": file, etcd and env merged; editing the file or the
    etcd key changes the running greeter's answer within a second."""
    config = tmp_path / "greeter.yaml"
    config.write_text("greeter:\n  greeting: FromFile\n")
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = clean_env(MICRO_CONFIG_FILE=str(config), MICRO_CONFIG="etcd", MICRO_CONFIG_ADDRESS=etcd)
    proc = subprocess.Popen(
        [str(TARGET / "greeter"), "--server_address", address],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(port, proc)
        assert hello(address) == "FromFile John"
        config.write_text("greeter:\n  greeting: Edited\n")
        answers_within(address, "Edited John", 1.0, "editing the file")
        assert micro("config", "set", "greeter.greeting", "FromEtcd", env=env).returncode == 0
        answers_within(address, "FromEtcd John", 1.0, "setting the etcd key")
        assert micro("config", "del", "greeter.greeting", env=env).returncode == 0
        answers_within(address, "Edited John", 1.0, "deleting the etcd key")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    # The environment wins over both.
    proc = subprocess.Popen(
        [str(TARGET / "greeter"), "--server_address", address],
        env={**env, "GREETER_GREETING": "FromEnv"},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(port, proc)
        assert hello(address) == "FromEnv John"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
