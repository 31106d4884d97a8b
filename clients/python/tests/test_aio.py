"""The asyncio API (micro.aio) against a real `micro server` and a real Rust greeter."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from conftest import WAIT, MicroServer, binary

import micro
import micro.aio


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def until(check, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_call_stream_and_errors(server: MicroServer, greeter) -> None:
    async def main() -> None:
        async with micro.aio.Client(server.address) as client:
            assert await client.call("greeter", "Greeter.Hello", {"name": "Ada"}, metadata={"x": "1"}) == {
                "message": "Hello Ada"
            }
            got = [m async for m in client.stream("greeter", "Greeter.Stream", {"name": "Ada", "count": 3})]
            assert got == [{"message": "Hello Ada", "sequence": i} for i in (1, 2, 3)]
            with pytest.raises(micro.BadRequest) as err:
                await client.call("greeter", "Greeter.Hello", {"name": ""})
            assert err.value.to_dict() == {
                "id": "greeter",
                "code": 400,
                "detail": "name is required",
                "status": "Bad Request",
            }
            with pytest.raises(micro.NotFound) as nf:
                await client.call("nope", "Nope.Call")
            assert nf.value.id == "micro.registry"
            with pytest.raises(micro.BadRequest):
                async for _ in client.stream("greeter", "Greeter.Stream", {"name": ""}):
                    pass

    run(main())


def test_the_proxy_address_comes_from_micro_proxy(server: MicroServer, greeter, monkeypatch) -> None:
    monkeypatch.setenv("MICRO_PROXY", server.address)

    async def main() -> None:
        async with micro.aio.Client() as client:
            assert await client.call("greeter", "Greeter.Hello", {"name": "Env"}) == {"message": "Hello Env"}

    run(main())


def test_an_absent_proxy_is_unavailable() -> None:
    from conftest import free_port

    async def main() -> None:
        async with micro.aio.Client(f"127.0.0.1:{free_port()}") as client:
            with pytest.raises(micro.Unavailable):
                await client.call("greeter", "Greeter.Hello", {"name": "x"}, timeout=2)

    run(main())


def slow_service(server: MicroServer, events: dict[str, Any]) -> micro.aio.Service:
    svc = micro.aio.Service("aioworker", proxy=server.address)

    @svc.handle("Slow.Wait")
    async def wait(req: dict) -> dict:
        events["started"].set()
        try:
            await asyncio.sleep(req["seconds"])
        except asyncio.CancelledError:
            events["cancelled"] = True
            raise
        return {"waited": req["seconds"]}

    @svc.handle("Slow.Ticks")
    async def ticks(req: dict, ctx: micro.Context) -> AsyncIterator[dict]:
        try:
            for i in range(req.get("n", 1000)):
                yield {"tick": i, "endpoint": ctx.endpoint}
                await asyncio.sleep(0.05)
        finally:
            events["ticks_closed"] = True

    return svc


def test_timeout_is_a_timeout_error(server: MicroServer) -> None:
    async def main() -> None:
        events: dict[str, Any] = {"started": asyncio.Event()}
        async with slow_service(server, events), micro.aio.Client(server.address) as client:
            t0 = time.monotonic()
            with pytest.raises(micro.Timeout) as err:
                await client.call("aioworker", "Slow.Wait", {"seconds": 5}, timeout=0.5)
            assert time.monotonic() - t0 < 2.5
            assert err.value.code == 408

    run(main())


def test_cancelling_the_task_cancels_the_call(server: MicroServer) -> None:
    async def main() -> None:
        events: dict[str, Any] = {"started": asyncio.Event()}
        async with slow_service(server, events), micro.aio.Client(server.address) as client:
            task = asyncio.create_task(client.call("aioworker", "Slow.Wait", {"seconds": 10}, timeout=30))
            await asyncio.wait_for(events["started"].wait(), WAIT)
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - t0 < 1
            # The cancel travelled through the proxy to the Python service, which
            # cancelled the handler.
            await until(lambda: events.get("cancelled", False))
            # The client is still usable.
            assert await client.call("aioworker", "Slow.Wait", {"seconds": 0}) == {"waited": 0}

    run(main())


def test_cancelling_a_stream_reader_stops_the_stream(server: MicroServer) -> None:
    async def main() -> None:
        events: dict[str, Any] = {"started": asyncio.Event()}
        async with slow_service(server, events), micro.aio.Client(server.address) as client:
            got: list[dict] = []

            async def read() -> None:
                async for item in client.stream("aioworker", "Slow.Ticks", {}, timeout=30):
                    got.append(item)

            task = asyncio.create_task(read())
            await until(lambda: len(got) >= 3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert got[0] == {"tick": 0, "endpoint": "Slow.Ticks"}
            # The cancel travelled through the proxy to the Python service, which
            # closed the handler's generator.
            await until(lambda: events.get("ticks_closed", False))

            stream = client.stream("aioworker", "Slow.Ticks", {"n": 2})
            async with stream:
                assert [i["tick"] async for i in stream] == [0, 1]

    run(main())


def test_publish_subscribe_and_queue_groups(server: MicroServer) -> None:
    async def main() -> None:
        async with micro.aio.Client(server.address) as client:
            all_: list[int] = []
            group: dict[str, list[int]] = {"a": [], "b": []}

            async def to_all(m: micro.Message) -> None:
                all_.append(m.message["n"])

            subs = [
                await client.subscribe("tasks", to_all),
                await client.subscribe("tasks", lambda m: group["a"].append(m.message["n"]), queue="q"),
                await client.subscribe("tasks", lambda m: group["b"].append(m.message["n"]), queue="q"),
            ]
            ids = [await client.publish("tasks", {"n": n}) for n in range(10)]
            assert len(set(ids)) == 10
            await until(lambda: len(all_) == 10 and len(group["a"]) + len(group["b"]) >= 10)
            await asyncio.sleep(0.3)
            for s in subs:
                await s.stop()
            assert not any(s.active for s in subs)
            assert sorted(all_) == list(range(10))
            assert sorted(group["a"] + group["b"]) == list(range(10))
            with pytest.raises(micro.BadRequest):
                await client.subscribe("bad topic", to_all)

    run(main())


def test_registry(server: MicroServer, greeter) -> None:
    async def main() -> None:
        async with micro.aio.Client(server.address) as client:
            assert "greeter" in [s.name for s in await client.registry.list_services()]
            [record] = await client.registry.get_service("greeter")
            assert [e.name for e in record.endpoints] == ["Greeter.Hello", "Greeter.Stream"]
            with pytest.raises(micro.NotFound):
                await client.registry.get_service("nope")
            record = micro.ServiceRecord("awatched", nodes=[micro.Node("aw-1", "127.0.0.1:7003")])
            async with client.registry.watch("awatched") as events:
                await events.wait_ready()  # watching: the change cannot be missed
                await client.registry.register(record, ttl=30)
                created = await events.__anext__()
                await client.registry.deregister(record)
                async for event in events:
                    if event.action == "delete":
                        break
            assert (created.action, created.service.nodes[0].id) == ("create", "aw-1")
            assert event.service.nodes[0].id == "aw-1"

    run(main())


def test_config(server: MicroServer) -> None:
    async def main() -> None:
        async with micro.aio.Client(server.address) as client:
            await client.config.set("shop.currency", "EUR")
            assert await client.config.get("shop") == {"currency": "EUR"}
            assert await client.config.list() == {"shop.currency": "EUR"}
            assert await client.config.get("shop.nope", 7) == 7
            with pytest.raises(micro.NotFound):
                await client.config.get("shop.nope")
            changes = client.config.watch("shop.currency")
            async with changes:
                assert await changes.__anext__() == micro.ConfigChange("shop.currency", "EUR")
                await client.config.set("shop.currency", "USD")
                assert await changes.__anext__() == micro.ConfigChange("shop.currency", "USD")
                await client.config.delete("shop")
                assert await changes.__anext__() == micro.ConfigChange("shop.currency", None, True)

    run(main())


def test_an_async_service_called_from_rust_and_python(server: MicroServer) -> None:
    async def main() -> None:
        events: dict[str, Any] = {"started": asyncio.Event()}
        svc = slow_service(server, events)

        @svc.handle("Slow.Echo")
        def echo(req: dict) -> dict:  # a plain function in an async service: a worker thread
            return {"echo": req, "thread": threading.current_thread().name.startswith("micro-")}

        async with svc, micro.aio.Client(server.address) as client:
            assert await client.call("aioworker", "Slow.Echo", {"a": 1}) == {"echo": {"a": 1}, "thread": True}
            out = await asyncio.to_thread(
                subprocess.run,
                [str(binary("micro")), "call", "aioworker", "Slow.Wait", '{"seconds": 0.01}'],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout) == {"waited": 0.01}
        async with micro.aio.Client(server.address) as client:
            with pytest.raises(micro.NotFound):
                await client.registry.get_service("aioworker")

    run(main())


def test_run_until_cancelled(server: MicroServer) -> None:
    async def main() -> None:
        svc = micro.aio.Service("runner", proxy=server.address)
        svc.add_handler("Run.Ping", lambda req: {"pong": True})
        task = asyncio.create_task(svc.run())
        async with micro.aio.Client(server.address) as client:
            for _ in range(200):
                try:
                    await client.registry.get_service("runner")
                    break
                except micro.NotFound:
                    await asyncio.sleep(0.05)
            assert await client.call("runner", "Run.Ping") == {"pong": True}
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(micro.NotFound):
                await client.registry.get_service("runner")

    run(main())
