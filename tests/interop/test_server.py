"""`micro server` end to end: the real binary and a real greeter on loopback ports,
called over gRPC with stubs generated from proto/micro/v1/*.proto and
proto/grpc/health/v1/health.proto by stock grpcio-tools (no micro code), and over
JSON on HTTP with urllib."""

import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest

from conftest import ROOT, TARGET, free_port, wait_for_port

WAIT = 10.0  # seconds to wait for something that happens over loopback


class MicroServer:
    """One `micro server` process; `restart` keeps its ports and data directory."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proxy_port, self.api_port, self.web_port = free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{self.proxy_port}"
        self.url = f"http://{self.address}"
        self.proc = None
        self.log = data_dir.parent / "micro-server.log"

    def start(self):
        binary = TARGET / "micro"
        if not binary.exists():
            pytest.fail(f"{binary} is missing: run `cargo build -p micro-cli` first")
        self.proc = subprocess.Popen(
            [
                str(binary), "server",
                "--proxy_address", self.address,
                "--api_address", f"127.0.0.1:{self.api_port}",
                "--web_address", f"127.0.0.1:{self.web_port}",
                "--data_dir", str(self.data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "a"),
            text=True,
        )
        try:
            wait_for_port(self.proxy_port, self.proc)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.log.read_text()}") from None

    def stop(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def restart(self):
        assert self.stop() == 0, self.log.read_text()
        self.start()


@pytest.fixture
def server(tmp_path):
    s = MicroServer(tmp_path / "data")
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def api(tmp_path_factory):
    """Python stubs of micro.v1 and grpc.health.v1, compiled at test time."""
    import grpc_tools  # noqa: PLC0415
    from grpc_tools import protoc  # noqa: PLC0415

    out = tmp_path_factory.mktemp("api-stubs")
    well_known = f"{grpc_tools.__path__[0]}/_proto"
    # health.proto is compiled from a copy under another directory: a Python
    # package `grpc.health` would clash with grpcio's own `grpc` (the proto
    # package, and so the service name grpc.health.v1.Health, stays the same).
    health_src = tmp_path_factory.mktemp("health-src")
    (health_src / "health_v1").mkdir()
    shutil.copy(ROOT / "proto/grpc/health/v1/health.proto", health_src / "health_v1")
    protos = [(ROOT / "proto", f"micro/v1/{n}.proto") for n in ("registry", "broker", "client", "config")]
    protos.append((health_src, "health_v1/health.proto"))
    for include, proto in protos:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{include}",
                f"-I{well_known}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(include / proto),
            ]
        )
        assert code == 0, f"protoc failed on {proto}"
    sys.path.insert(0, str(out))
    from health_v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415
    from micro.v1 import (  # noqa: PLC0415
        broker_pb2,
        broker_pb2_grpc,
        client_pb2,
        client_pb2_grpc,
        config_pb2,
        config_pb2_grpc,
        registry_pb2,
        registry_pb2_grpc,
    )

    return {
        "registry_pb2": registry_pb2,
        "registry_pb2_grpc": registry_pb2_grpc,
        "broker_pb2": broker_pb2,
        "broker_pb2_grpc": broker_pb2_grpc,
        "client_pb2": client_pb2,
        "client_pb2_grpc": client_pb2_grpc,
        "config_pb2": config_pb2,
        "config_pb2_grpc": config_pb2_grpc,
        "health_pb2": health_pb2,
        "health_pb2_grpc": health_pb2_grpc,
    }


def value(obj):
    """A google.protobuf.Value holding the JSON value obj."""
    from google.protobuf import json_format, struct_pb2  # noqa: PLC0415

    return json_format.ParseDict(obj, struct_pb2.Value())


def plain(v):
    """The JSON value a google.protobuf.Value holds."""
    from google.protobuf import json_format  # noqa: PLC0415

    return json_format.MessageToDict(v)


def in_background(iterator) -> queue.Queue:
    """Reads a stream in a thread; each item is put on the returned queue, then the
    error that ended it (if any), then None."""
    q = queue.Queue()

    def run():
        try:
            for item in iterator:
                q.put(item)
        except Exception as e:  # noqa: BLE001 (handed to the test)
            q.put(e)
        q.put(None)

    threading.Thread(target=run, daemon=True).start()
    return q


def next_matching(q: queue.Queue, pred, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no matching item in time")
        try:
            item = q.get(timeout=left)
        except queue.Empty:
            raise TimeoutError("no matching item in time") from None
        if item is None or isinstance(item, Exception):
            raise AssertionError(f"stream ended: {item!r}")
        if pred(item):
            return item


def wait_for_greeter(api, channel):
    """The greeter registers shortly after it listens; wait until the proxy sees it."""
    stub = api["registry_pb2_grpc"].RegistryStub(channel)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            rsp = stub.GetService(api["registry_pb2"].GetServiceRequest(service="greeter"))
            if any(s.nodes for s in rsp.services):
                return rsp
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("greeter never showed up in the proxy's registry")
        time.sleep(0.1)


def post(url, body, accept=None, timeout=WAIT):
    """POSTs JSON; returns (status, headers, parsed JSON body)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as rsp:
            return rsp.status, rsp.headers, json.loads(rsp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def open_stream(url, body, accept=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if accept:
        req.add_header("Accept", accept)
    return urllib.request.urlopen(req, timeout=WAIT)


# ---------------------------------------------------------------------------
# gRPC


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def test_grpc_registry(api, server, greeter, channel):
    pb, rpc = api["registry_pb2"], api["registry_pb2_grpc"]
    stub = rpc.RegistryStub(channel)
    got = wait_for_greeter(api, channel)
    assert [n.address for s in got.services for n in s.nodes] == [greeter.address]
    assert "Greeter.Hello" in [e.name for e in got.services[0].endpoints]

    listed = stub.ListServices(pb.ListServicesRequest())
    assert "greeter" in [s.name for s in listed.services]

    events = in_background(stub.Watch(pb.WatchServicesRequest()))
    fake = pb.Service(
        name="fake",
        version="1.0.0",
        nodes=[pb.Node(id="fake-1", address="127.0.0.1:1", metadata={"protocol": "grpc"})],
    )
    # The watch may not be open yet when Register is sent: register until the
    # event arrives (a second registration of the same node is an update).
    deadline = time.monotonic() + WAIT
    while True:
        stub.Register(pb.RegisterRequest(service=fake, ttl_seconds=60))
        try:
            event = next_matching(
                events, lambda e: e.service.name == "fake" and e.action == "create", timeout=1.0
            )
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    assert [n.id for n in event.service.nodes] == ["fake-1"]

    got = stub.GetService(pb.GetServiceRequest(service="fake"))
    assert [n.address for s in got.services for n in s.nodes] == ["127.0.0.1:1"]

    stub.Deregister(pb.DeregisterRequest(service=fake))
    next_matching(events, lambda e: e.service.name == "fake" and e.action == "delete")
    with pytest.raises(grpc.RpcError) as err:
        stub.GetService(pb.GetServiceRequest(service="fake"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert json.loads(dict(err.value.trailing_metadata())["micro-error"])["code"] == 404


def test_grpc_client_call_stream_and_error(api, server, greeter, channel):
    pb, rpc = api["client_pb2"], api["client_pb2_grpc"]
    wait_for_greeter(api, channel)
    stub = rpc.ClientStub(channel)

    rsp = stub.Call(
        pb.CallRequest(service="greeter", endpoint="Greeter.Hello", request=value({"name": "John"}))
    )
    assert plain(rsp.response) == {"message": "Hello John"}

    stream = stub.Stream(
        pb.CallRequest(service="greeter", endpoint="Greeter.Stream", request=value({"name": "John"}))
    )
    got = [plain(r.response) for r in stream]
    assert [g["message"] for g in got] == ["Hello John"] * 3
    assert [g["sequence"] for g in got] == [1, 2, 3]

    with pytest.raises(grpc.RpcError) as err:
        stub.Call(
            pb.CallRequest(service="greeter", endpoint="Greeter.Hello", request=value({"name": ""}))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert json.loads(dict(err.value.trailing_metadata())["micro-error"]) == {
        "id": "greeter",
        "code": 400,
        "detail": "name is required",
        "status": "Bad Request",
    }


def test_grpc_client_stream_with_an_integer_field(api, server, greeter, channel):
    pb, rpc = api["client_pb2"], api["client_pb2_grpc"]
    wait_for_greeter(api, channel)
    stream = rpc.ClientStub(channel).Stream(
        pb.CallRequest(
            service="greeter", endpoint="Greeter.Stream", request=value({"name": "J", "count": 2})
        )
    )
    assert [plain(r.response)["sequence"] for r in stream] == [1, 2]


def test_grpc_broker_subscribe_publish_and_queue_group(api, server, channel):
    pb, rpc = api["broker_pb2"], api["broker_pb2_grpc"]
    stub = rpc.BrokerStub(channel)
    every = in_background(stub.Subscribe(pb.SubscribeRequest(topic="orders")))
    a = in_background(stub.Subscribe(pb.SubscribeRequest(topic="orders", queue="workers")))
    b = in_background(stub.Subscribe(pb.SubscribeRequest(topic="orders", queue="workers")))

    # Publish warm-up messages until the plain subscriber sees one: the
    # subscriptions are open from then on.
    deadline = time.monotonic() + WAIT
    while True:
        stub.Publish(pb.PublishRequest(topic="orders", message=value({"warmup": True})))
        try:
            next_matching(every, lambda m: True, timeout=0.5)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    time.sleep(0.5)

    ids = []
    for n in range(6):
        rsp = stub.Publish(
            pb.PublishRequest(topic="orders", message=value({"n": n}), headers={"k": "v"})
        )
        assert rsp.id
        ids.append(rsp.id)

    seen = [next_matching(every, lambda m: "n" in plain(m.message)) for _ in range(6)]
    assert sorted(plain(m.message)["n"] for m in seen) == list(range(6))
    assert {m.id for m in seen} == set(ids)
    assert all(m.topic == "orders" and m.headers["k"] == "v" for m in seen)

    # The queue group shares the six: each message goes to exactly one of a and b.
    time.sleep(1.0)
    workers = []
    for q in (a, b):
        while not q.empty():
            m = q.get()
            if m is not None and not isinstance(m, Exception) and "n" in plain(m.message):
                workers.append(plain(m.message)["n"])
    assert sorted(workers) == list(range(6))


def test_grpc_config(api, server, channel):
    pb, rpc = api["config_pb2"], api["config_pb2_grpc"]
    stub = rpc.ConfigStub(channel)

    stub.Write(pb.WriteRequest(path="app.db", value=value({"host": "db.local", "port": 5432})))
    assert plain(stub.Read(pb.ReadRequest(path="app.db.host")).value) == "db.local"
    assert plain(stub.Read(pb.ReadRequest(path="app")).value) == {
        "db": {"host": "db.local", "port": 5432}
    }
    entries = stub.List(pb.ListRequest(path="app")).entries
    assert {e.path: plain(e.value) for e in entries} == {"app.db.host": "db.local", "app.db.port": 5432}

    changes = in_background(stub.Watch(pb.WatchConfigRequest(path="app.db.host")))
    first = next_matching(changes, lambda c: True)
    assert plain(first.value) == "db.local" and not first.deleted
    stub.Write(pb.WriteRequest(path="app.db.host", value=value("db2.local")))
    changed = next_matching(changes, lambda c: plain(c.value) == "db2.local")
    assert changed.path == "app.db.host"

    stub.Delete(pb.DeleteRequest(path="app.db.host"))
    next_matching(changes, lambda c: c.deleted)
    with pytest.raises(grpc.RpcError) as err:
        stub.Read(pb.ReadRequest(path="app.db.host"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_health(api, server, channel):
    pb, rpc = api["health_pb2"], api["health_pb2_grpc"]
    stub = rpc.HealthStub(channel)
    for service in ("", "micro.v1.Registry", "micro.v1.Broker", "micro.v1.Config", "micro.v1.Client"):
        rsp = stub.Check(pb.HealthCheckRequest(service=service))
        assert rsp.status == pb.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(pb.HealthCheckRequest(service="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_stock_grpc_call_through_the_sidecar(api, stubs, server, greeter, channel):
    """A plain gRPC client pointed at the proxy reaches the greeter."""
    wait_for_greeter(api, channel)
    stub = stubs["greeter_pb2_grpc"].GreeterStub(channel)
    rsp = stub.Hello(stubs["greeter_pb2"].HelloRequest(name="Jane"))
    assert rsp.message == "Hello Jane"
    with pytest.raises(grpc.RpcError) as err:
        stub.Hello(stubs["greeter_pb2"].HelloRequest(name=""))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stop_ends_open_streams_at_once(api, server, channel):
    """SIGTERM with Subscribe and both Watch streams open: the server stops without
    waiting out its drain timeout (the streams never end by themselves), and each
    stream ends with UNAVAILABLE, which tells its caller to reconnect."""
    b, r, c = api["broker_pb2_grpc"], api["registry_pb2_grpc"], api["config_pb2_grpc"]
    streams = [
        in_background(b.BrokerStub(channel).Subscribe(api["broker_pb2"].SubscribeRequest(topic="t"))),
        in_background(
            r.RegistryStub(channel).Watch(api["registry_pb2"].WatchServicesRequest())
        ),
        in_background(c.ConfigStub(channel).Watch(api["config_pb2"].WatchConfigRequest(path="x"))),
    ]
    # The config watch answers its current value first: it is open.
    next_matching(streams[2], lambda change: True)
    time.sleep(0.5)  # the other two have no first item; give them time to open

    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    # The default drain timeout is 10 s; a stop held by the streams would take it all.
    assert server.proc.wait(timeout=8) == 0, server.log.read_text()
    assert time.monotonic() - started < 8
    for q in streams:
        end = q.get(timeout=WAIT)
        while not isinstance(end, Exception):
            assert end is not None, "a stream ended without an error"
            end = q.get(timeout=WAIT)
        assert end.code() == grpc.StatusCode.UNAVAILABLE, end


def test_config_survives_a_restart(api, server, channel):
    pb, rpc = api["config_pb2"], api["config_pb2_grpc"]
    rpc.ConfigStub(channel).Write(pb.WriteRequest(path="feature.beta", value=value(True)))
    server.restart()
    with grpc.insecure_channel(server.address) as ch:
        got = rpc.ConfigStub(ch).Read(pb.ReadRequest(path="feature.beta"))
        assert plain(got.value) is True
    status, _, body = post(f"{server.url}/micro.v1.Config/Read", {"path": "feature"})
    assert (status, body) == (200, {"value": {"beta": True}})


# ---------------------------------------------------------------------------
# JSON over HTTP


def test_http_registry_and_call(api, server, greeter, channel):
    wait_for_greeter(api, channel)
    status, _, body = post(f"{server.url}/micro.v1.Registry/ListServices", {})
    assert status == 200
    assert "greeter" in [s["name"] for s in body["services"]]

    status, _, body = post(
        f"{server.url}/micro.v1.Client/Call",
        {"service": "greeter", "endpoint": "Greeter.Hello", "request": {"name": "John"}},
    )
    assert (status, body) == (200, {"response": {"message": "Hello John"}})

    status, _, body = post(
        f"{server.url}/micro.v1.Client/Call",
        {"service": "greeter", "endpoint": "Greeter.Hello", "request": {"name": ""}},
    )
    assert (status, body) == (
        400,
        {"id": "greeter", "code": 400, "detail": "name is required", "status": "Bad Request"},
    )

    # The greeter's own path on the proxy port: the sidecar, as JSON.
    status, _, body = post(f"{server.url}/greeter.Greeter/Hello", {"name": "Jane"})
    assert (status, body) == (200, {"message": "Hello Jane"})


def read_lines(rsp) -> queue.Queue:
    return in_background(line.decode().rstrip("\r\n") for line in rsp)


def publish_until(server, topic, lines: queue.Queue, pred):
    """Publishes over HTTP until a line matching pred arrives (the subscription
    may not be open when the first message goes out)."""
    deadline = time.monotonic() + WAIT
    while True:
        status, _, _ = post(
            f"{server.url}/micro.v1.Broker/Publish", {"topic": topic, "message": {"hello": "http"}}
        )
        assert status == 200
        try:
            return next_matching(lines, pred, timeout=0.5)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def test_http_subscribe_as_ndjson(server):
    rsp = open_stream(f"{server.url}/micro.v1.Broker/Subscribe", {"topic": "news"})
    try:
        assert rsp.headers["Content-Type"].startswith("application/x-ndjson")
        line = publish_until(server, "news", read_lines(rsp), lambda l: l.strip() != "")
        msg = json.loads(line)
        assert msg["topic"] == "news"
        assert msg["message"] == {"hello": "http"}
        assert msg["id"]
    finally:
        rsp.close()


def test_http_subscribe_as_server_sent_events(server):
    rsp = open_stream(
        f"{server.url}/micro.v1.Broker/Subscribe", {"topic": "news"}, accept="text/event-stream"
    )
    try:
        assert rsp.headers["Content-Type"].startswith("text/event-stream")
        line = publish_until(server, "news", read_lines(rsp), lambda l: l.startswith("data:"))
        msg = json.loads(line[len("data:"):])
        assert msg["topic"] == "news"
        assert msg["message"] == {"hello": "http"}
    finally:
        rsp.close()


def test_http_client_stream_as_ndjson(api, server, greeter, channel):
    wait_for_greeter(api, channel)
    rsp = open_stream(
        f"{server.url}/micro.v1.Client/Stream",
        {"service": "greeter", "endpoint": "Greeter.Stream", "request": {"name": "John"}},
    )
    with rsp:
        lines = [json.loads(l) for l in rsp.read().decode().splitlines() if l.strip()]
    assert [l["response"]["message"] for l in lines] == ["Hello John"] * 3
    assert [l["response"]["sequence"] for l in lines] == [1, 2, 3]


# ---------------------------------------------------------------------------
# docs/server.md


def test_server_doc_examples(api, server, greeter, channel, tmp_path):
    """docs/server.md's `sh test` blocks, in order, against this test's micro server
    (for 127.0.0.1:8081) and greeter."""
    from test_docs import require_curl, run_doc_against  # noqa: PLC0415

    require_curl()
    wait_for_greeter(api, channel)
    work = tmp_path / "work"
    work.mkdir()
    run_doc_against(ROOT / "docs" / "server.md", "127.0.0.1:8081", server.address, work, minimum=10)
