// Client.call and Client.stream against a real micro server and Rust greeter:
// answers, the shared error, timeouts, cancellation, metadata.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, MicroError, Service } from "@micro/client";
import { freePort, startStack, type Stack } from "./harness.js";

let stack: Stack;
let client: Client;
let slow: Service;

before(async () => {
  stack = await startStack();
  client = new Client({ address: stack.proxy });
  // A TypeScript service whose answers take as long as asked, and that echoes metadata.
  slow = new Service("tsslow", { address: stack.proxy, serverAddress: "127.0.0.1:0" });
  slow.handle("Slow.Echo", async (req: { sleep?: number }, ctx) => {
    await new Promise((r) => setTimeout(r, req.sleep ?? 0));
    return { metadata: ctx.metadata };
  });
  slow.handleStream("Slow.Ticks", async function* (req: { count: number }) {
    for (let i = 1; i <= req.count; i++) {
      yield { tick: i };
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  await slow.start();
});

after(async () => {
  await slow?.stop();
  client?.close();
  await stack?.stop();
});

/** Asserts `promise` rejects with a MicroError and returns it. */
async function microError(promise: Promise<unknown>): Promise<MicroError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof MicroError, `expected a MicroError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected a rejection");
}

describe("call", () => {
  test("answers with the decoded JSON response", async () => {
    const rsp = await client.call("greeter", "Greeter.Hello", { name: "John" });
    assert.deepEqual(rsp, { message: "Hello John" });
  });

  test("is typed by its caller", async () => {
    const rsp = await client.call<{ message: string }>("greeter", "Greeter.Hello", { name: "Jane" });
    assert.equal(rsp.message.toUpperCase(), "HELLO JANE");
  });

  test("passes a service's error on unchanged", async () => {
    const err = await microError(client.call("greeter", "Greeter.Hello", { name: "" }));
    assert.deepEqual(err.toJSON(), { id: "greeter", code: 400, detail: "name is required", status: "Bad Request" });
    assert.equal(err.message, "name is required");
    assert.equal(err.name, "MicroError");
    assert.ok(err instanceof Error);
  });

  test("an unknown service is a 404", async () => {
    const err = await microError(client.call("nosuchservice", "No.Such", {}));
    assert.equal(err.code, 404);
    assert.equal(err.status, "Not Found");
    assert.match(err.detail, /nosuchservice/);
  });

  test("a timeout is a 408", async () => {
    const started = Date.now();
    const err = await microError(client.call("tsslow", "Slow.Echo", { sleep: 3000 }, { timeout: 300 }));
    assert.equal(err.code, 408);
    assert.equal(err.status, "Request Timeout");
    assert.ok(Date.now() - started < 2500, `took ${Date.now() - started}ms`);
  });

  test("the client's default timeout applies", async () => {
    const impatient = new Client({ address: stack.proxy, timeout: 300 });
    try {
      const err = await microError(impatient.call("tsslow", "Slow.Echo", { sleep: 3000 }));
      assert.equal(err.code, 408);
    } finally {
      impatient.close();
    }
  });

  test("an AbortSignal cancels the call with an AbortError", async () => {
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(), 200);
    const err = await microError(client.call("tsslow", "Slow.Echo", { sleep: 3000 }, { signal: controller.signal }));
    assert.equal(err.name, "AbortError");
    assert.equal(err.code, 499);
    assert.ok(Date.now() - started < 2500, `took ${Date.now() - started}ms`);
  });

  test("an aborted signal rejects at once", async () => {
    const err = await microError(client.call("greeter", "Greeter.Hello", { name: "x" }, { signal: AbortSignal.abort() }));
    assert.equal(err.name, "AbortError");
  });

  test("metadata reaches the service as headers", async () => {
    const rsp = await client.call<{ metadata: Record<string, string> }>("tsslow", "Slow.Echo", {}, { metadata: { "x-user": "alice" } });
    assert.equal(rsp.metadata["x-user"], "alice");
  });

  test("version and address pick the node", async () => {
    const rsp = await client.call("greeter", "Greeter.Hello", { name: "V" }, { version: "latest", address: stack.greeter });
    assert.deepEqual(rsp, { message: "Hello V" });
    const err = await microError(client.call("greeter", "Greeter.Hello", { name: "V" }, { version: "9.9.9" }));
    assert.equal(err.code, 404);
  });

  test("MICRO_PROXY names the proxy, else localhost:8081", async () => {
    const saved = process.env["MICRO_PROXY"];
    try {
      delete process.env["MICRO_PROXY"];
      const byDefault = new Client();
      assert.equal(byDefault.address, "localhost:8081");
      byDefault.close();
      process.env["MICRO_PROXY"] = stack.proxy;
      const fromEnv = new Client();
      try {
        assert.equal(fromEnv.address, stack.proxy);
        assert.deepEqual(await fromEnv.call("greeter", "Greeter.Hello", { name: "Env" }), { message: "Hello Env" });
      } finally {
        fromEnv.close();
      }
    } finally {
      if (saved === undefined) delete process.env["MICRO_PROXY"];
      else process.env["MICRO_PROXY"] = saved;
    }
  });

  test("a proxy that is not there is a 503", async () => {
    const nowhere = new Client({ address: `127.0.0.1:${await freePort()}` });
    try {
      const err = await microError(nowhere.call("greeter", "Greeter.Hello", { name: "x" }, { timeout: 5000 }));
      assert.equal(err.code, 503);
      assert.equal(err.id, "micro.client");
    } finally {
      nowhere.close();
    }
  });

  test("health of the proxy", async () => {
    assert.equal(await client.health(), "SERVING");
    assert.equal(await client.health("micro.v1.Registry"), "SERVING");
  });
});

describe("stream", () => {
  test("yields each answer", async () => {
    const got = [];
    for await (const m of client.stream("greeter", "Greeter.Stream", { name: "John", count: 3 })) got.push(m);
    assert.deepEqual(got, [
      { message: "Hello John", sequence: 1 },
      { message: "Hello John", sequence: 2 },
      { message: "Hello John", sequence: 3 },
    ]);
  });

  test("throws the service's error", async () => {
    await assert.rejects(
      async () => {
        for await (const _ of client.stream("greeter", "Greeter.Stream", { name: "", count: 2 })) void _;
      },
      (err: unknown) => err instanceof MicroError && err.code === 400 && err.id === "greeter",
    );
  });

  test("breaking out of the loop ends it", async () => {
    let n = 0;
    for await (const _ of client.stream("greeter", "Greeter.Stream", { name: "x", count: 1000 })) {
      void _;
      if (++n === 2) break;
    }
    assert.equal(n, 2);
    // The connection is still good for more calls.
    assert.deepEqual(await client.call("greeter", "Greeter.Hello", { name: "after" }), { message: "Hello after" });
  });

  test("an AbortSignal ends it with an AbortError", async () => {
    const controller = new AbortController();
    let n = 0;
    await assert.rejects(
      async () => {
        for await (const _ of client.stream("tsslow", "Slow.Ticks", { count: 100 }, { signal: controller.signal })) {
          void _;
          if (++n === 1) controller.abort();
        }
      },
      (err: unknown) => err instanceof MicroError && err.name === "AbortError" && err.code === 499,
    );
    assert.equal(n, 1);
  });

  test("closing the client ends its streams and refuses new calls", async () => {
    const own = new Client({ address: stack.proxy });
    const stream = own.stream("tsslow", "Slow.Ticks", { count: 100 });
    assert.deepEqual(await stream.next(), { done: false, value: { tick: 1 } });
    own.close();
    await assert.rejects(
      async () => {
        for await (const _ of stream) void _;
      },
      (err: unknown) => err instanceof MicroError && err.name === "AbortError",
    );
    await assert.rejects(own.call("greeter", "Greeter.Hello", { name: "x" }), (err: unknown) => err instanceof MicroError && err.name === "AbortError");
  });

  test("an unknown service is a 404", async () => {
    await assert.rejects(
      async () => {
        for await (const _ of client.stream("nosuchservice", "No.Such", {})) void _;
      },
      (err: unknown) => err instanceof MicroError && err.code === 404,
    );
  });
});
