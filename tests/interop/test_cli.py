"""The `micro` command line against a real greeter: `micro call` and `micro stream`,
their output formats, errors and hints, and their help."""

import json
import os
import subprocess

import pytest

from conftest import TARGET, free_port

TIMEOUT = 30  # seconds: every command here answers in well under a second


def micro(*args, stdin=None, env=None):
    binary = TARGET / "micro"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `cargo build --workspace` first")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MICRO_")}
    clean.update(env or {})
    return subprocess.run(
        [str(binary), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean,
        timeout=TIMEOUT,
    )


HELLO = ("call", "greeter", "Greeter.Hello")


def test_call_prints_the_response_and_exits_0(greeter):
    out = micro(*HELLO, '{"name":"John"}', "--address", greeter.address)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"message": "Hello John"}
    # pretty by default: indented over several lines
    assert out.stdout == '{\n  "message": "Hello John"\n}\n'


def test_call_output_json_is_one_compact_line(greeter):
    out = micro(*HELLO, '{"name":"John"}', "--address", greeter.address, "-o", "json")
    assert out.returncode == 0, out.stderr
    assert out.stdout == '{"message":"Hello John"}\n'
    out = micro(*HELLO, '{"name":"John"}', "--address", greeter.address, "--output", "json")
    assert out.stdout == '{"message":"Hello John"}\n'


def test_call_accepts_metadata_and_timeout(greeter):
    out = micro(
        *HELLO, '{"name":"John"}', "--address", greeter.address,
        "-m", "x-user=alice", "--metadata", "x-a=1,x-b=2", "--timeout", "2s", "-o", "json",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == '{"message":"Hello John"}\n'


def test_call_rejects_malformed_metadata(greeter):
    out = micro(*HELLO, '{"name":"John"}', "--address", greeter.address, "-m", "novalue")
    assert out.returncode != 0
    assert "key=value" in out.stderr


def test_call_reads_the_request_from_stdin(greeter):
    out = micro(*HELLO, "-", "--address", greeter.address, "-o", "json", stdin='{"name":"Stdin"}\n')
    assert out.returncode == 0, out.stderr
    assert out.stdout == '{"message":"Hello Stdin"}\n'


def test_address_from_micro_address_env(greeter):
    out = micro(*HELLO, '{"name":"Env"}', "-o", "json", env={"MICRO_ADDRESS": greeter.address})
    assert out.returncode == 0, out.stderr
    assert out.stdout == '{"message":"Hello Env"}\n'


def test_stream_prints_each_message(greeter):
    out = micro("stream", "greeter", "Greeter.Stream", '{"name":"A","count":3}', "--address", greeter.address, "-o", "json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"message": "Hello A", "sequence": n} for n in (1, 2, 3)
    ]
    # pretty output prints the same three messages
    out = micro("stream", "greeter", "Greeter.Stream", '{"name":"A","count":3}', "--address", greeter.address)
    assert out.returncode == 0, out.stderr
    decoder, text, messages = json.JSONDecoder(), out.stdout.strip(), []
    while text:
        value, end = decoder.raw_decode(text)
        messages.append(value)
        text = text[end:].strip()
    assert [m["sequence"] for m in messages] == [1, 2, 3]


def test_stream_error_before_the_stream_exits_non_zero(greeter):
    out = micro("stream", "greeter", "Greeter.Stream", '{"name":"A","count":5000}', "--address", greeter.address)
    assert out.returncode != 0
    assert "count must be between 1 and 1000" in out.stderr
    assert "400" in out.stderr


def test_empty_name_is_a_400_with_the_error(greeter):
    out = micro(*HELLO, '{"name":""}', "--address", greeter.address)
    assert out.returncode != 0
    assert out.stdout == ""
    assert "name is required" in out.stderr
    assert "400" in out.stderr
    # the error JSON is printed too, for scripts
    error_line = [line for line in out.stderr.splitlines() if line.startswith("{")]
    assert json.loads(error_line[-1]) == {
        "id": "greeter", "code": 400, "detail": "name is required", "status": "Bad Request",
    }


def test_malformed_json_argument_is_refused_clearly(greeter):
    out = micro(*HELLO, "{name:", "--address", greeter.address)
    assert out.returncode != 0
    assert "not valid JSON" in out.stderr
    assert "{name:" in out.stderr  # shows what it got


def test_unknown_service_without_address_hints_at_address():
    out = micro(*HELLO, '{"name":"John"}')
    assert out.returncode != 0
    assert "not found" in out.stderr
    assert "--address" in out.stderr


def test_unreachable_address_is_503_with_a_hint():
    port = free_port()  # nothing listens there
    out = micro(*HELLO, '{"name":"John"}', "--address", f"127.0.0.1:{port}", "--timeout", "3s")
    assert out.returncode != 0
    assert "503" in out.stderr
    assert "hint:" in out.stderr and "running" in out.stderr


def test_unknown_endpoint_is_404(greeter):
    out = micro("call", "greeter", "Greeter.Goodbye", "{}", "--address", greeter.address)
    assert out.returncode != 0
    assert "404" in out.stderr and "Greeter.Goodbye" in out.stderr


def test_bad_timeout_is_a_usage_error():
    out = micro(*HELLO, "{}", "--address", "127.0.0.1:1", "--timeout", "soon")
    assert out.returncode == 2
    assert "expected a duration" in out.stderr


def test_top_level_help_lists_the_commands():
    out = micro("--help")
    assert out.returncode == 0
    for word in ["call", "stream"]:
        assert word in out.stdout


@pytest.mark.parametrize("command", ["call", "stream"])
def test_command_help_lists_every_option(command):
    out = micro(command, "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for flag in ["--address", "--timeout", "--metadata", "-m", "-o", "--output"]:
        assert flag in text, flag
    assert "MICRO_ADDRESS" in text
    # the registry and client flags, with the environment variables that set them
    for flag, var in [
        ("--registry", "MICRO_REGISTRY"),
        ("--registry_address", "MICRO_REGISTRY_ADDRESS"),
        ("--selector", "MICRO_SELECTOR"),
        ("--client_retries", "MICRO_CLIENT_RETRIES"),
        ("--client_request_timeout", "MICRO_CLIENT_REQUEST_TIMEOUT"),
        ("--client_dial_timeout", "MICRO_CLIENT_DIAL_TIMEOUT"),
        ("--client_pool_size", "MICRO_CLIENT_POOL_SIZE"),
        ("--proxy", "MICRO_PROXY"),
    ]:
        assert flag in text, flag
        assert var in text, var


def test_unknown_registry_is_refused(greeter):
    out = micro(*HELLO, '{"name":"John"}', "--address", greeter.address, env={"MICRO_REGISTRY": "consul"})
    assert out.returncode != 0
    assert "unknown registry" in out.stderr
    assert "etcd" in out.stderr  # the names this build knows


def test_call_on_a_streaming_endpoint_points_to_micro_stream(greeter):
    out = micro("call", "greeter", "Greeter.Stream", '{"name":"A"}', "--address", greeter.address)
    assert out.returncode != 0
    assert "micro stream" in out.stderr


def test_address_without_port_is_a_usage_error():
    out = micro(*HELLO, '{"name":"John"}', "--address", "localhost")
    assert out.returncode == 2
    assert "host:port" in out.stderr


def test_proxy_setting_is_used_not_ignored(greeter):
    # Nothing listens at this proxy address: a call that really goes through the
    # proxy fails there, and says so.
    port = free_port()
    out = micro(*HELLO, '{"name":"John"}', "--proxy", f"127.0.0.1:{port}")
    assert out.returncode != 0
    assert f"127.0.0.1:{port}" in out.stderr, out.stderr
    # A pinned --address still calls the node directly.
    out = micro(*HELLO, '{"name":"John"}', "--address", greeter.address, "--proxy", f"127.0.0.1:{port}")
    assert out.returncode == 0, out.stderr
