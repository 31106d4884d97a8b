// The config store of micro server through the proxy: get, set, delete, list, watch.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, MicroError, type ConfigChange } from "@micro/client";
import { eventually, startStack, type Stack } from "./harness.js";

let stack: Stack;
let client: Client;

before(async () => {
  stack = await startStack({ greeter: false });
  client = new Client({ address: stack.proxy });
});

after(async () => {
  client?.close();
  await stack?.stop();
});

describe("config", () => {
  test("set, get, list and delete values", async () => {
    await client.config.set("app.greeting", "Hi");
    await client.config.set("app.beta", true);
    await client.config.set("app.limits", { rps: 10, burst: 20 });
    assert.equal(await client.config.get("app.greeting"), "Hi");
    assert.deepEqual(await client.config.get("app"), { greeting: "Hi", beta: true, limits: { rps: 10, burst: 20 } });
    assert.deepEqual(await client.config.list("app"), [
      { path: "app.beta", value: true },
      { path: "app.greeting", value: "Hi" },
      { path: "app.limits.burst", value: 20 },
      { path: "app.limits.rps", value: 10 },
    ]);
    await client.config.delete("app.beta");
    assert.deepEqual(Object.keys(await client.config.get<Record<string, never>>("app")).sort(), ["greeting", "limits"]);
    await client.config.delete("app.never.set"); // deleting what is not set succeeds
  });

  test("a path that is not set is a 404", async () => {
    await assert.rejects(client.config.get("nope"), (err: unknown) => {
      assert.ok(err instanceof MicroError);
      assert.equal(err.code, 404);
      assert.equal(err.id, "micro.config");
      assert.match(err.detail, /nope is not set/);
      return true;
    });
  });

  test("an empty path cannot be set", async () => {
    await assert.rejects(client.config.set("", 1), (err: unknown) => err instanceof MicroError && err.code === 400);
  });

  test("watch gives the value now, then each change, then the deletion", async () => {
    await client.config.set("watched.key", "one");
    const changes: ConfigChange[] = [];
    const controller = new AbortController();
    const watching = (async () => {
      for await (const change of client.config.watch("watched.key", { signal: controller.signal })) changes.push(change);
    })();
    try {
      await eventually("the current value", () => changes[0]);
      await client.config.set("watched.key", "two");
      await eventually("the change", () => changes[1]);
      await client.config.delete("watched.key");
      await eventually("the deletion", () => changes[2]);
      assert.deepEqual(changes, [
        { path: "watched.key", value: "one", deleted: false },
        { path: "watched.key", value: "two", deleted: false },
        { path: "watched.key", value: null, deleted: true },
      ]);
    } finally {
      controller.abort();
      await watching.catch(() => undefined);
    }
  });

  test("breaking out of a watch ends it", async () => {
    await client.config.set("watched.other", 1);
    for await (const change of client.config.watch("watched.other")) {
      assert.equal(change.value, 1);
      break;
    }
    assert.equal(await client.config.get("watched.other"), 1);
  });
});
