"""Python functions served as a micro service (JSON over HTTP/1.1, registered
through the proxy), called from the Rust CLI, through the proxy by this client, and
over plain HTTP."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from conftest import MicroServer, binary, eventually

import micro


def worker(server: MicroServer, **options) -> micro.Service:
    """The `pyworker` of these tests."""
    svc = micro.Service("pyworker", proxy=server.address, **options)

    @svc.handle("Worker.Run")
    def run(req: dict, ctx: micro.Context) -> dict:
        if "sleep" in req:
            time.sleep(req["sleep"])
        if req.get("fail"):
            raise micro.Error(req["fail"], code=req.get("code", 409))
        if req.get("crash"):
            raise RuntimeError("a bug")
        return {
            "job": req.get("job"),
            "user": ctx.metadata.get("x-user"),
            "endpoint": ctx.endpoint,
            "has_deadline": ctx.deadline is not None,
        }

    @svc.handle("Worker.Count")
    def count(req: dict) -> Iterator[dict]:
        for i in range(1, req.get("n", 3) + 1):
            if req.get("fail_at") == i:
                raise micro.BadRequest(f"failed at {i}")
            yield {"i": i}

    @svc.handle("Worker.Sum", stream="client")
    def total(reqs: Iterator[dict]) -> dict:
        return {"sum": sum(r["n"] for r in reqs)}

    @svc.handle("Worker.Broken", stream="server")
    def broken(req: dict) -> None:
        return None  # a stream must return an iterator

    @svc.handle("Worker.Context")
    def context(req: dict) -> dict:
        ctx = micro.current_context()
        return {"service": ctx.service, "from": ctx.from_service, "remaining": ctx.time_remaining() is not None}

    return svc


@pytest.fixture
def pyworker(server: MicroServer) -> Iterator[micro.Service]:
    with worker(server) as svc:
        yield svc


def cli(*args: str) -> subprocess.CompletedProcess:
    """The Rust `micro` CLI (it finds services in the test's registry directory)."""
    return subprocess.run([str(binary("micro")), *args], capture_output=True, text=True, timeout=60)


def post(
    address: str, endpoint: str | None, body: bytes, headers: dict | None = None, path: str = "/", method: str = "POST"
):
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    h = {"Content-Type": "application/json", **(headers or {})}
    if endpoint:
        h["Micro-Endpoint"] = endpoint
    conn.request(method, path, body=body, headers=h)
    rsp = conn.getresponse()
    data = rsp.read()
    conn.close()
    return rsp.status, rsp.getheader("content-type"), data


# -- registration ---------------------------------------------------------------


def test_the_node_is_registered_with_protocol_http_json(client: micro.Client, pyworker: micro.Service) -> None:
    [record] = client.registry.get_service("pyworker")
    assert record.version == "latest"
    assert {e.name: e.metadata["stream"] for e in record.endpoints} == {
        "Worker.Run": "false",
        "Worker.Count": "server",
        "Worker.Sum": "client",
        "Worker.Broken": "server",
        "Worker.Context": "false",
    }
    [node] = record.nodes
    assert node.id == pyworker.node_id
    assert node.address == pyworker.address
    assert node.metadata["protocol"] == "http-json"


def test_stop_deregisters(client: micro.Client, server: MicroServer) -> None:
    svc = worker(server)
    svc.start()
    assert client.registry.get_service("pyworker")
    svc.stop()
    with pytest.raises(micro.NotFound):
        client.registry.get_service("pyworker")


def test_the_heartbeat_keeps_a_short_ttl_registration_alive(client: micro.Client, server: MicroServer) -> None:
    # Without renewal a 1 s registration goes away ...
    client.registry.register(micro.ServiceRecord("shortlived", nodes=[micro.Node("s-1", "127.0.0.1:7002")]), ttl=1)
    eventually(lambda: _gone(client, "shortlived"), timeout=10)
    # ... with the heart-beat it stays.
    with worker(server, ttl=2, interval=0.3) as svc:
        time.sleep(4)  # twice the TTL
        assert [n.id for r in client.registry.get_service("pyworker") for n in r.nodes] == [svc.node_id]


def _gone(client: micro.Client, name: str) -> bool:
    try:
        return not any(r.nodes for r in client.registry.get_service(name))
    except micro.NotFound:
        return True


def test_sigterm_deregisters_a_service_in_run(client: micro.Client, server: MicroServer, tmp_path) -> None:
    script = tmp_path / "svc.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import micro
            svc = micro.Service("sigworker", proxy={server.address!r})

            @svc.handle("Sig.Ping")
            def ping(req):
                return {{"pong": req.get("n")}}

            svc.run()
            print("stopped cleanly", flush=True)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: client.registry.get_service("sigworker"))
        assert client.call("sigworker", "Sig.Ping", {"n": 5}) == {"pong": 5}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in out
    # Gone at once (its TTL is 90 s): it deregistered.
    with pytest.raises(micro.NotFound):
        client.registry.get_service("sigworker")


def test_sigint_stops_run_too(client: micro.Client, server: MicroServer, tmp_path) -> None:
    script = tmp_path / "svc.py"
    script.write_text(
        f"import micro\nsvc = micro.Service('intworker', proxy={server.address!r})\n"
        "svc.add_handler('Int.Ping', lambda req: {})\nsvc.run()\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: client.registry.get_service("intworker"))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert _gone(client, "intworker")


def test_start_fails_when_the_proxy_is_not_there() -> None:
    from conftest import free_port

    svc = micro.Service("lonely", proxy=f"127.0.0.1:{free_port()}")
    svc.add_handler("Lonely.Ping", lambda req: {})
    with pytest.raises(micro.Unavailable):
        svc.start()


# -- called from Rust -------------------------------------------------------------


def test_micro_call_through_the_proxy(server: MicroServer, pyworker: micro.Service) -> None:
    out = cli("call", "--proxy", server.address, "pyworker", "Worker.Run", '{"job": 42}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"job": 42, "user": None, "endpoint": "Worker.Run", "has_deadline": True}


def test_micro_call_through_the_registry_with_metadata(server: MicroServer, pyworker: micro.Service) -> None:
    out = cli("call", "-m", "x-user=alice", "pyworker", "Worker.Run", '{"job": "a"}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["user"] == "alice"


def test_micro_call_gets_the_python_error(server: MicroServer, pyworker: micro.Service) -> None:
    out = cli("call", "pyworker", "Worker.Run", '{"fail": "no such job", "code": 404}')
    assert out.returncode != 0
    assert '{"id":"pyworker","code":404,"detail":"no such job","status":"Not Found"}' in out.stderr + out.stdout


def test_micro_stream_reads_a_python_generator(server: MicroServer, pyworker: micro.Service) -> None:
    out = cli("stream", "pyworker", "Worker.Count", '{"n": 3}')
    assert out.returncode == 0, out.stderr
    assert json_values(out.stdout) == [{"i": 1}, {"i": 2}, {"i": 3}]


def json_values(text: str) -> list:
    """The JSON values printed one after another (pretty-printed or not)."""
    decoder, values, pos = json.JSONDecoder(), [], 0
    while pos < len(text.strip()):
        value, end = decoder.raw_decode(text, pos)
        values.append(value)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return values


# -- called from Python through the proxy -----------------------------------------------


def test_call_a_python_endpoint(client: micro.Client, pyworker: micro.Service) -> None:
    rsp = client.call("pyworker", "Worker.Run", {"job": 7}, metadata={"x-user": "bob"})
    assert rsp == {"job": 7, "user": "bob", "endpoint": "Worker.Run", "has_deadline": True}


def test_stream_a_python_generator(client: micro.Client, pyworker: micro.Service) -> None:
    assert list(client.stream("pyworker", "Worker.Count", {"n": 4})) == [{"i": i} for i in range(1, 5)]


def test_an_error_in_the_middle_of_a_python_stream(client: micro.Client, pyworker: micro.Service) -> None:
    got = []
    with pytest.raises(micro.BadRequest) as err:
        for item in client.stream("pyworker", "Worker.Count", {"n": 5, "fail_at": 3}):
            got.append(item)
    assert got == [{"i": 1}, {"i": 2}]
    assert (err.value.id, err.value.detail) == ("pyworker", "failed at 3")


def test_a_raised_micro_error_keeps_its_code(client: micro.Client, pyworker: micro.Service) -> None:
    with pytest.raises(micro.Conflict) as err:
        client.call("pyworker", "Worker.Run", {"fail": "busy"})
    assert err.value.to_dict() == {"id": "pyworker", "code": 409, "detail": "busy", "status": "Conflict"}


def test_a_crash_is_an_internal_error(client: micro.Client, pyworker: micro.Service) -> None:
    with pytest.raises(micro.InternalError) as err:
        client.call("pyworker", "Worker.Run", {"crash": True})
    assert err.value.to_dict() == {
        "id": "pyworker",
        "code": 500,
        "detail": "Worker.Run failed unexpectedly",
        "status": "Internal Server Error",
    }
    # ... and the service goes on serving.
    assert client.call("pyworker", "Worker.Run", {"job": 1})["job"] == 1


def test_a_slow_handler_times_out(client: micro.Client, pyworker: micro.Service) -> None:
    started = time.monotonic()
    with pytest.raises(micro.Timeout) as err:
        client.call("pyworker", "Worker.Run", {"sleep": 3}, timeout=0.5)
    assert time.monotonic() - started < 2.5
    assert err.value.code == 408


def test_the_context_is_available_to_handlers(client: micro.Client, pyworker: micro.Service) -> None:
    rsp = client.call("pyworker", "Worker.Context", {})
    assert rsp == {"service": "pyworker", "from": None, "remaining": True}


# -- plain HTTP ---------------------------------------------------------------------------


def test_http_with_the_micro_endpoint_header(pyworker: micro.Service) -> None:
    status, ctype, body = post(pyworker.address, "Worker.Run", b'{"job": 3}', {"X-User": "carol", "Timeout": "2s"})
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body) == {"job": 3, "user": "carol", "endpoint": "Worker.Run", "has_deadline": True}


def test_http_with_the_path(pyworker: micro.Service) -> None:
    for path in ("/Worker/Run", "/pyworker.Worker/Run"):
        status, _, body = post(pyworker.address, None, b"", path=path)
        assert status == 200
        assert json.loads(body)["endpoint"] == "Worker.Run"


def test_http_errors_are_the_shared_error_json(pyworker: micro.Service) -> None:
    cases = [
        (("Worker.Nope", b"{}"), 404, "pyworker"),
        (("Worker.Run", b"{not json"), 400, "micro.codec"),
        (("Worker.Run", b'{"crash": true}'), 500, "pyworker"),
        (("Worker.Run", b'{"fail": "nope", "code": 403}'), 403, "pyworker"),
    ]
    for (endpoint, body), code, id_ in cases:
        status, ctype, data = post(pyworker.address, endpoint, body)
        err = json.loads(data)
        assert (status, ctype, err["code"], err["id"]) == (code, "application/json", code, id_), data
        assert set(err) == {"id", "code", "detail", "status"}
    status, _, data = post(pyworker.address, "Worker.Run", b"{}", {"Timeout": "soon"})
    assert status == 400 and "malformed Timeout header" in json.loads(data)["detail"]
    status, _, data = post(pyworker.address, "Worker.Run", b"", method="GET")
    assert status == 405
    status, _, data = post(pyworker.address, "Worker.Run", b'{"sleep": 2}', {"Timeout": "200ms"})
    assert status == 408 and json.loads(data)["detail"] == "Worker.Run did not finish before the deadline"


def test_http_streams_are_ndjson(pyworker: micro.Service) -> None:
    status, ctype, body = post(pyworker.address, "Worker.Count", b'{"n": 2}')
    assert (status, ctype) == (200, "application/x-ndjson")
    assert body == b'{"i":1}\n{"i":2}\n'
    status, _, body = post(pyworker.address, "Worker.Count", b'{"n": 3, "fail_at": 2}')
    assert status == 200
    lines = body.decode().splitlines()
    assert json.loads(lines[0]) == {"i": 1}
    assert json.loads(lines[1]) == {
        "error": {"id": "pyworker", "code": 400, "detail": "failed at 2", "status": "Bad Request"}
    }
    status, _, body = post(pyworker.address, "Worker.Count", b'{"fail_at": 1}')
    assert status == 400  # an error before the first message has its own status


def test_http_client_streams_are_ndjson_requests(pyworker: micro.Service) -> None:
    status, _, body = post(pyworker.address, "Worker.Sum", b'{"n": 1}\n{"n": 2}\n{"n": 39}\n')
    assert (status, json.loads(body)) == (200, {"sum": 42})


def test_http_keep_alive_and_chunked_requests(pyworker: micro.Service) -> None:
    host, port = pyworker.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    for i in range(3):  # one connection, several requests
        conn.request("POST", "/", body=json.dumps({"job": i}), headers={"Micro-Endpoint": "Worker.Run"})
        rsp = conn.getresponse()
        assert json.loads(rsp.read())["job"] == i
    conn.request(
        "POST",
        "/",
        body=iter([b'{"job":', b' "chunked"}']),
        headers={"Micro-Endpoint": "Worker.Run"},
        encode_chunked=True,
    )
    rsp = conn.getresponse()
    assert json.loads(rsp.read())["job"] == "chunked"
    conn.close()


def test_http_body_limit(server: MicroServer) -> None:
    with worker(server, max_body=1000) as svc:
        status, _, data = post(svc.address, "Worker.Run", b'{"job": "' + b"x" * 2000 + b'"}')
    assert status == 413 and json.loads(data)["code"] == 413


def test_debug_health_and_stats(pyworker: micro.Service) -> None:
    status, _, body = post(pyworker.address, "Debug.Health", b"{}")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, _, body = post(pyworker.address, None, b"{}", path="/micro.debug.v1.Debug/Stats")
    stats = json.loads(body)
    assert (stats["service"], stats["version"]) == ("pyworker", "latest")


def test_version_and_metadata_from_the_environment(client: micro.Client, server: MicroServer, monkeypatch) -> None:
    monkeypatch.setenv("MICRO_SERVER_VERSION", "2.1.0")
    monkeypatch.setenv("MICRO_SERVER_METADATA", "team=py,tier=1")
    with worker(server) as svc:
        [record] = client.registry.get_service("pyworker")
    assert (svc.version, record.version, record.metadata) == ("2.1.0", "2.1.0", {"team": "py", "tier": "1"})


def test_unicode_survives_the_error_path(client: micro.Client, pyworker: micro.Service) -> None:
    with pytest.raises(micro.BadRequest) as err:
        client.call("pyworker", "Worker.Run", {"fail": "café ☕ 日本", "code": 400})
    assert err.value.detail == "café ☕ 日本"
    assert client.call("pyworker", "Worker.Run", {"job": "naïve ☕"})["job"] == "naïve ☕"


def test_a_stream_that_outlives_its_timeout(client: micro.Client, server: MicroServer) -> None:
    svc = micro.Service("ticker", proxy=server.address)

    @svc.handle("Ticker.Tick")
    def tick(req: dict) -> Iterator[dict]:
        for i in range(100):
            yield {"i": i}
            time.sleep(0.1)

    got = []
    with svc:
        with pytest.raises(micro.Timeout):
            for item in client.stream("ticker", "Ticker.Tick", {}, timeout=0.5):
                got.append(item)
    assert 1 <= len(got) < 10


def test_a_stream_handler_that_returns_no_iterator(client: micro.Client, pyworker: micro.Service) -> None:
    with pytest.raises(micro.InternalError) as err:
        list(client.stream("pyworker", "Worker.Broken", {}))
    assert err.value.detail == "Worker.Broken is a stream but did not return an iterator"
