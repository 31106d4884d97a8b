"""The synchronous client against a real `micro server` and a real Rust greeter."""

from __future__ import annotations

import queue
import threading
import time

import pytest
from conftest import WAIT, MicroServer, eventually

import micro


def test_call_returns_the_decoded_response(client: micro.Client, greeter) -> None:
    assert client.call("greeter", "Greeter.Hello", {"name": "John"}) == {"message": "Hello John"}


def test_call_sends_metadata_and_takes_a_timeout(client: micro.Client, greeter) -> None:
    rsp = client.call("greeter", "Greeter.Hello", {"name": "Ann"}, timeout=5, metadata={"X-User": "alice"})
    assert rsp == {"message": "Hello Ann"}


def test_stream_yields_every_response(client: micro.Client, greeter) -> None:
    got = list(client.stream("greeter", "Greeter.Stream", {"name": "John", "count": 4}))
    assert got == [{"message": "Hello John", "sequence": i} for i in range(1, 5)]


def test_stream_can_be_closed_early(client: micro.Client, greeter) -> None:
    with client.stream("greeter", "Greeter.Stream", {"name": "John", "count": 1000}) as stream:
        first = next(stream)
        stream.close()
        rest = list(stream)
    assert first == {"message": "Hello John", "sequence": 1}
    assert len(rest) < 999


def test_a_service_error_arrives_unchanged(client: micro.Client, greeter) -> None:
    with pytest.raises(micro.BadRequest) as err:
        client.call("greeter", "Greeter.Hello", {"name": ""})
    e = err.value
    assert (e.id, e.code, e.detail, e.status) == ("greeter", 400, "name is required", "Bad Request")
    assert e.to_dict() == {"id": "greeter", "code": 400, "detail": "name is required", "status": "Bad Request"}


def test_a_stream_error_arrives_unchanged(client: micro.Client, greeter) -> None:
    with pytest.raises(micro.BadRequest) as err:
        list(client.stream("greeter", "Greeter.Stream", {"name": "John", "count": 5000}))
    assert err.value.id == "greeter"
    assert "count must be between 1 and 1000" in err.value.detail


def test_an_unknown_service_is_not_found(client: micro.Client, server) -> None:
    with pytest.raises(micro.NotFound) as err:
        client.call("nope", "Nope.Call", {})
    assert err.value.code == 404
    assert err.value.id == "micro.registry"
    assert "nope" in err.value.detail


def test_an_unknown_endpoint_is_not_found(client: micro.Client, greeter) -> None:
    with pytest.raises(micro.NotFound) as err:
        client.call("greeter", "Greeter.Nope", {})
    assert "Greeter.Nope" in err.value.detail


def test_a_proxy_that_is_not_there_is_unavailable() -> None:
    from conftest import free_port

    with micro.Client(f"127.0.0.1:{free_port()}") as c:
        with pytest.raises(micro.Unavailable) as err:
            c.call("greeter", "Greeter.Hello", {"name": "John"}, timeout=2)
    assert err.value.code == 503
    assert err.value.id == "micro.client"


def test_the_address_comes_from_micro_proxy(server: MicroServer, greeter, monkeypatch) -> None:
    monkeypatch.setenv("MICRO_PROXY", server.address)
    with micro.Client() as c:
        assert c.address == server.address
        assert c.call("greeter", "Greeter.Hello", {"name": "Env"}) == {"message": "Hello Env"}
    monkeypatch.delenv("MICRO_PROXY")
    assert micro.Client().address == "localhost:8081"
    assert micro.Client("127.0.0.1:1234").address == "127.0.0.1:1234"


def test_publish_reaches_a_subscriber(client: micro.Client, server) -> None:
    got: queue.Queue[micro.Message] = queue.Queue()
    with client.subscribe("orders", got.put) as sub:
        assert sub.active
        msg_id = client.publish("orders", {"order": 1, "items": ["a", "b"]}, headers={"X-Trace": "t1"})
        raw_id = client.publish("orders", b"\x00\x01raw", content_type="application/octet-stream")
        first = got.get(timeout=WAIT)
        second = got.get(timeout=WAIT)
    assert not sub.active
    assert (first.topic, first.id, first.message, first.body) == (
        "orders",
        msg_id,
        {"order": 1, "items": ["a", "b"]},
        b"",
    )
    assert first.headers["x-trace"] == "t1"
    assert first.headers["content-type"] == "application/json"
    assert (second.id, second.message, second.body) == (raw_id, None, b"\x00\x01raw")


def test_a_subscriber_receives_what_the_rust_greeter_publishes(client: micro.Client, greeter) -> None:
    got: queue.Queue[micro.Message] = queue.Queue()
    with client.subscribe("greeter.hello", got.put):
        client.call("greeter", "Greeter.Hello", {"name": "Pub"})
        msg = got.get(timeout=WAIT)
    assert msg.topic == "greeter.hello"
    assert msg.message == {"name": "Pub", "message": "Hello Pub"}
    assert msg.headers.get("micro-from-service") == "greeter"


def test_a_queue_group_shares_the_messages(client: micro.Client, server) -> None:
    lock = threading.Lock()
    by: dict[str, list[int]] = {"a": [], "b": [], "all": []}

    def collect(name: str):
        def handler(m: micro.Message) -> None:
            with lock:
                by[name].append(m.message["n"])

        return handler

    subs = [
        client.subscribe("jobs", collect("a"), queue="workers"),
        client.subscribe("jobs", collect("b"), queue="workers"),
        client.subscribe("jobs", collect("all")),
    ]
    try:
        for n in range(20):
            client.publish("jobs", {"n": n})
        eventually(lambda: len(by["all"]) == 20 and len(by["a"]) + len(by["b"]) >= 20)
        time.sleep(0.3)  # a duplicate would arrive about now
    finally:
        for s in subs:
            s.stop()
    assert sorted(by["all"]) == list(range(20))
    # Each message went to exactly one member of the group.
    assert sorted(by["a"] + by["b"]) == list(range(20))


def test_a_handler_that_raises_does_not_end_the_subscription(client: micro.Client, server) -> None:
    got: list[int] = []

    def handler(m: micro.Message) -> None:
        if m.message["n"] == 0:
            raise ValueError("bad message")
        got.append(m.message["n"])

    with client.subscribe("flaky", handler) as sub:
        client.publish("flaky", {"n": 0})
        client.publish("flaky", {"n": 1})
        eventually(lambda: got == [1])
        assert sub.active and sub.error is None


def test_subscribing_to_a_bad_topic_is_a_bad_request(client: micro.Client, server) -> None:
    with pytest.raises(micro.BadRequest) as err:
        client.subscribe("not a topic", lambda m: None)
    assert err.value.id == "micro.broker"


def test_registry_lists_and_gets_services(client: micro.Client, greeter) -> None:
    names = [s.name for s in client.registry.list_services()]
    assert "greeter" in names
    [record] = client.registry.get_service("greeter")
    assert record.version == "latest"
    assert [e.name for e in record.endpoints] == ["Greeter.Hello", "Greeter.Stream"]
    assert record.endpoints[1].metadata["stream"] == "server"
    assert record.endpoints[0].request is not None and record.endpoints[0].request.name == "HelloRequest"
    assert record.endpoints[0].request.schema["properties"]["name"]["type"] == "string"
    [node] = record.nodes
    assert node.metadata["protocol"] == "grpc+json"
    assert node.address.startswith("127.0.0.1:")


def test_registry_get_service_of_an_unknown_service_is_not_found(client: micro.Client, server) -> None:
    with pytest.raises(micro.NotFound):
        client.registry.get_service("nope")


def test_registry_register_and_deregister(client: micro.Client, server) -> None:
    record = micro.ServiceRecord(
        name="legacy",
        version="1.0.0",
        metadata={"team": "x"},
        endpoints=[micro.Endpoint("Legacy.Get", micro.MessageType("GetRequest", {"type": "object"}))],
        nodes=[micro.Node("legacy-1", "127.0.0.1:7000", {"protocol": "http-json"})],
    )
    client.registry.register(record, ttl=60)
    [got] = client.registry.get_service("legacy")
    assert (got.name, got.version, got.metadata["team"]) == ("legacy", "1.0.0", "x")
    assert got.endpoints[0].request == micro.MessageType("GetRequest", {"type": "object"})
    assert [(n.id, n.address, n.metadata["protocol"]) for n in got.nodes] == [
        ("legacy-1", "127.0.0.1:7000", "http-json")
    ]
    client.registry.deregister(record)
    with pytest.raises(micro.NotFound):
        client.registry.get_service("legacy")


def test_registry_watch_yields_events(client: micro.Client, server) -> None:
    record = micro.ServiceRecord("watched", nodes=[micro.Node("watched-1", "127.0.0.1:7001")])
    with client.registry.watch("watched") as events:
        events.wait_ready()  # watching: the change cannot be missed
        client.registry.register(record, ttl=60)
        created = next(events)
        client.registry.deregister(record)
        deleted = next(e for e in events if e.action == "delete")
    assert created.action == "create"
    assert created.service.name == "watched"
    assert [n.id for n in created.service.nodes] == ["watched-1"]
    assert [n.id for n in deleted.service.nodes] == ["watched-1"]


def test_registry_watch_starts_with_the_current_state(client: micro.Client, greeter) -> None:
    with client.registry.watch() as events:
        first = next(events)
    assert (first.action, first.service.name) == ("create", "greeter")


def test_config_set_get_list_delete(client: micro.Client, server) -> None:
    client.config.set("app.name", "shop")
    client.config.set("app.limits", {"users": 10, "ratio": 0.5, "on": True, "tags": ["a", None]})
    assert client.config.get("app.name") == "shop"
    assert client.config.get("app.limits.users") == 10
    assert client.config.get("app") == {
        "name": "shop",
        "limits": {"users": 10, "ratio": 0.5, "on": True, "tags": ["a", None]},
    }
    assert client.config.list("app.limits") == {
        "app.limits.on": True,
        "app.limits.ratio": 0.5,
        "app.limits.tags": ["a", None],
        "app.limits.users": 10,
    }
    client.config.delete("app.limits")
    assert client.config.get("app") == {"name": "shop"}
    with pytest.raises(micro.NotFound) as err:
        client.config.get("app.limits")
    assert err.value.id == "micro.config"
    assert client.config.get("app.limits", default=None) is None
    assert client.config.get("app.limits", {"users": 1}) == {"users": 1}
    client.config.delete("never.set")  # no error


def test_config_set_of_an_empty_path_is_a_bad_request(client: micro.Client, server) -> None:
    with pytest.raises(micro.BadRequest):
        client.config.set("", 1)


def test_config_watch_yields_the_value_then_each_change(client: micro.Client, server) -> None:
    client.config.set("greeter.greeting", "Hi")
    with client.config.watch("greeter.greeting") as changes:
        assert next(changes) == micro.ConfigChange("greeter.greeting", "Hi", False)
        client.config.set("greeter.greeting", "Hey")
        assert next(changes) == micro.ConfigChange("greeter.greeting", "Hey", False)
        client.config.delete("greeter.greeting")
        assert next(changes) == micro.ConfigChange("greeter.greeting", None, True)
    assert changes.closed


def test_config_values_survive_a_restart_of_micro_server(tmp_path) -> None:
    s = MicroServer(tmp_path / "data", tmp_path / "first.log")
    try:
        with micro.Client(s.address) as c:
            c.config.set("kept", {"n": 1})
    finally:
        s.stop()
    s2 = MicroServer(tmp_path / "data", tmp_path / "second.log")
    try:
        with micro.Client(s2.address) as c:
            assert c.config.get("kept") == {"n": 1}
    finally:
        s2.stop()


def test_greeter_uses_the_greeting_from_config(client: micro.Client, server, tmp_path) -> None:
    """A value written through the client is what a Rust service reading the
    server's config (MICRO_CONFIG=service) uses."""
    import os

    from conftest import Process, binary, free_port, wait_for_port

    client.config.set("greeter.greeting", "Howdy")
    port = free_port()
    env_before = dict(os.environ)
    os.environ.update({"MICRO_CONFIG": "service", "MICRO_CONFIG_ADDRESS": server.address})
    try:
        g = Process([str(binary("greeter")), "--server_address", f"127.0.0.1:{port}"], tmp_path / "greeter2.log")
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    try:
        wait_for_port(port, g.proc, g.log)
        eventually(lambda: client.registry.get_service("greeter"))
        assert client.call("greeter", "Greeter.Hello", {"name": "Tex"}) == {"message": "Howdy Tex"}
    finally:
        g.stop()


def test_a_subscription_survives_a_restart_of_micro_server(tmp_path) -> None:
    s = MicroServer(tmp_path / "data", tmp_path / "first.log")
    got: queue.Queue[micro.Message] = queue.Queue()
    try:
        with micro.Client(s.address) as c:
            sub = c.subscribe("survivor", got.put)
            s.stop()
            s = MicroServer(tmp_path / "data", tmp_path / "second.log", port=s.port)

            def delivered() -> bool:
                c.publish("survivor", {"after": "restart"})
                return not got.empty()

            eventually(delivered, interval=0.3)
            assert got.get().message == {"after": "restart"}
            assert sub.active
            sub.stop()
    finally:
        s.stop()
