// The registry through the proxy: list, get, register, deregister, watch.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, MicroError, type ServiceEvent } from "@micro/client";
import { eventually, startStack, type Stack } from "./harness.js";

let stack: Stack;
let client: Client;

before(async () => {
  stack = await startStack();
  client = new Client({ address: stack.proxy });
});

after(async () => {
  client?.close();
  await stack?.stop();
});

const legacy = (id: string) => ({
  name: "legacy",
  version: "1.0.0",
  nodes: [{ id, address: "127.0.0.1:7000", metadata: { protocol: "http-json" } }],
});

describe("registry", () => {
  test("listServices lists the greeter with its node", async () => {
    const services = await client.registry.listServices();
    const greeter = services.find((s) => s.name === "greeter");
    assert.ok(greeter, `greeter not in ${JSON.stringify(services.map((s) => s.name))}`);
    assert.equal(greeter.version, "latest");
    assert.deepEqual(greeter.nodes.map((n) => n.address), [stack.greeter]);
  });

  test("getService shows endpoints with their schemas", async () => {
    const [greeter, ...more] = await client.registry.getService("greeter");
    assert.equal(more.length, 0);
    assert.ok(greeter);
    assert.deepEqual(greeter.endpoints.map((e) => e.name).sort(), ["Greeter.Hello", "Greeter.Stream"]);
    const hello = greeter.endpoints.find((e) => e.name === "Greeter.Hello");
    assert.equal(hello?.request?.name, "HelloRequest");
    assert.equal(typeof hello?.request?.schema, "object");
    assert.equal(greeter.endpoints.find((e) => e.name === "Greeter.Stream")?.metadata["stream"], "server");
  });

  test("getService of an unknown service is a 404", async () => {
    await assert.rejects(client.registry.getService("nosuchservice"), (err: unknown) => {
      assert.ok(err instanceof MicroError);
      assert.equal(err.code, 404);
      assert.equal(err.id, "micro.registry");
      return true;
    });
  });

  test("register, get by version, deregister", async () => {
    await client.registry.register(legacy("legacy-1"), { ttl: 60 });
    const [record] = await client.registry.getService("legacy", { version: "1.0.0" });
    assert.deepEqual(record?.nodes.map((n) => [n.id, n.address, n.metadata["protocol"]]), [["legacy-1", "127.0.0.1:7000", "http-json"]]);
    await assert.rejects(client.registry.getService("legacy", { version: "2.0.0" }), (e: unknown) => e instanceof MicroError && e.code === 404);
    await client.registry.deregister(legacy("legacy-1"));
    await assert.rejects(client.registry.getService("legacy"), (e: unknown) => e instanceof MicroError && e.code === 404);
  });

  test("watch starts with the current state, then each change", async () => {
    const events: ServiceEvent[] = [];
    const controller = new AbortController();
    const watching = (async () => {
      for await (const event of client.registry.watch({ service: "legacy", signal: controller.signal })) events.push(event);
    })();
    try {
      // A first registration may race with the watch opening, so register until seen.
      await eventually("create event", async () => {
        await client.registry.register(legacy("legacy-2"), { ttl: 60 });
        return events.find((e) => e.action === "create" && e.service?.nodes.some((n) => n.id === "legacy-2"));
      });
      assert.equal(events[0]?.service?.name, "legacy");
      await client.registry.deregister(legacy("legacy-2"));
      const gone = await eventually("delete event", () => events.find((e) => e.action === "delete"));
      assert.deepEqual(gone.service?.nodes.map((n) => n.id), ["legacy-2"]);
      assert.ok(events.every((e) => e.service?.name === "legacy"), "only the watched service");
    } finally {
      controller.abort();
      await assert.rejects(watching, (e: unknown) => e instanceof MicroError && e.name === "AbortError");
    }
  });

  test("watch of everything opens with the greeter as a create event", async () => {
    for await (const event of client.registry.watch()) {
      if (event.service?.name !== "greeter") continue;
      assert.equal(event.action, "create");
      assert.equal(event.service.nodes[0]?.address, stack.greeter);
      break;
    }
  });
});
