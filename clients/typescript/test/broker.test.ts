// publish and subscribe through the proxy's broker: JSON and bytes, queue groups,
// closing, handler errors, and messages a Rust service publishes.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, MicroError, type BrokerMessage } from "@micro/client";
import { eventually, sleep, startStack, type Stack } from "./harness.js";

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

describe("publish and subscribe", () => {
  test("a subscriber gets what is published, with its id and headers", async () => {
    const got: BrokerMessage[] = [];
    const sub = client.subscribe("ts.news", (m) => {
      got.push(m);
    });
    try {
      await sub.ready;
      const id = await client.publish("ts.news", { title: "hello", n: 3 }, { headers: { "x-source": "ts" } });
      assert.match(id, /\S+/);
      const m = await eventually("delivery", () => got[0]);
      assert.equal(m.topic, "ts.news");
      assert.equal(m.id, id);
      assert.deepEqual(m.message, { title: "hello", n: 3 });
      assert.equal(m.headers["x-source"], "ts");
      assert.equal(m.headers["content-type"], "application/json");
      assert.equal(m.body, undefined);
    } finally {
      await sub.close();
    }
  });

  test("bytes travel as bytes with their content type", async () => {
    const got: BrokerMessage[] = [];
    const sub = client.subscribe("ts.bytes", (m) => {
      got.push(m);
    });
    try {
      await sub.ready;
      await client.publish("ts.bytes", new Uint8Array([1, 2, 3, 255]), { contentType: "application/octet-stream" });
      const m = await eventually("delivery", () => got[0]);
      assert.deepEqual([...(m.body ?? [])], [1, 2, 3, 255]);
      assert.equal(m.headers["content-type"], "application/octet-stream");
      assert.equal(m.message, undefined);
    } finally {
      await sub.close();
    }
  });

  test("a queue group shares the messages; a plain subscriber gets them all", async () => {
    const a: number[] = [];
    const b: number[] = [];
    const all: number[] = [];
    const subs = [
      client.subscribe("ts.jobs", (m) => void a.push(m.message as number), { queue: "workers" }),
      client.subscribe("ts.jobs", (m) => void b.push(m.message as number), { queue: "workers" }),
      client.subscribe("ts.jobs", (m) => void all.push(m.message as number)),
    ];
    try {
      await Promise.all(subs.map((s) => s.ready));
      assert.equal(subs[0]?.queue, "workers");
      assert.equal(subs[2]?.queue, undefined);
      for (let i = 0; i < 20; i++) await client.publish("ts.jobs", i);
      await eventually("every message to the plain subscriber", () => (all.length === 20 ? true : undefined));
      await eventually("every message to the group", () => (a.length + b.length === 20 ? true : undefined));
      await sleep(200); // nothing more arrives: each message went to one member only
      assert.deepEqual([...a, ...b].sort((x, y) => x - y), [...Array(20).keys()]);
      assert.deepEqual(all, [...Array(20).keys()]);
    } finally {
      await Promise.all(subs.map((s) => s.close()));
    }
  });

  test("a closed subscription gets nothing more", async () => {
    const got: unknown[] = [];
    const sub = client.subscribe("ts.closing", (m) => void got.push(m.message));
    await sub.ready;
    await client.publish("ts.closing", "first");
    await eventually("first delivery", () => got[0]);
    await sub.close();
    await client.publish("ts.closing", "second");
    await sleep(300);
    assert.deepEqual(got, ["first"]);
  });

  test("an AbortSignal closes a subscription", async () => {
    const controller = new AbortController();
    const sub = client.subscribe("ts.signal", () => undefined, { signal: controller.signal });
    await sub.ready;
    controller.abort();
    await sub.closed;
  });

  test("closing the client ends its subscriptions", async () => {
    const own = new Client({ address: stack.proxy });
    const errors: MicroError[] = [];
    const sub = own.subscribe("ts.owned", () => undefined, { onError: (e) => errors.push(e) });
    await sub.ready;
    own.close();
    await sub.closed;
    assert.deepEqual(errors, []);
  });

  test("a subscription whose proxy stops tells onError and ends", async () => {
    const other = await startStack({ greeter: false });
    const own = new Client({ address: other.proxy });
    try {
      const errors: MicroError[] = [];
      const sub = own.subscribe("ts.doomed", () => undefined, { onError: (e) => errors.push(e) });
      await sub.ready;
      await other.stop();
      await sub.closed;
      assert.equal(errors.length, 1);
      assert.equal(errors[0]?.code, 503);
      assert.equal(errors[0]?.id, "micro.proxy");
    } finally {
      own.close();
      await other.stop();
    }
  });

  test("a handler that throws is reported and the subscription goes on", async () => {
    const errors: Array<[MicroError, BrokerMessage | undefined]> = [];
    const got: unknown[] = [];
    const sub = client.subscribe(
      "ts.failing",
      (m) => {
        if (m.message === "bad") throw new Error("cannot handle bad");
        got.push(m.message);
      },
      { onError: (e, m) => errors.push([e, m]) },
    );
    try {
      await sub.ready;
      await client.publish("ts.failing", "bad");
      await client.publish("ts.failing", "good");
      await eventually("the good one", () => got[0]);
      assert.equal(errors.length, 1);
      assert.equal(errors[0]?.[0].detail, "cannot handle bad");
      assert.equal(errors[0]?.[1]?.message, "bad");
    } finally {
      await sub.close();
    }
  });

  test("an invalid topic is a 400 from publish and from subscribe", async () => {
    await assert.rejects(client.publish("has spaces", {}), (err: unknown) => err instanceof MicroError && err.code === 400);
    const errors: MicroError[] = [];
    const sub = client.subscribe("has spaces", () => undefined, { onError: (e) => errors.push(e) });
    await assert.rejects(sub.ready, (err: unknown) => err instanceof MicroError && err.code === 400);
    await sub.closed;
    assert.equal(errors[0]?.code, 400);
  });

  test("receives what a Rust service publishes", async () => {
    // The greeter announces each greeting on greeter.hello.
    const got: BrokerMessage[] = [];
    const sub = client.subscribe("greeter.hello", (m) => void got.push(m));
    try {
      await sub.ready;
      await client.call("greeter", "Greeter.Hello", { name: "Pub" });
      const m = await eventually("the greeter's announcement", () => got[0]);
      assert.deepEqual(m.message, { name: "Pub", message: "Hello Pub" });
    } finally {
      await sub.close();
    }
  });
});
