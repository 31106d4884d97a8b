// Serving: a TypeScript function as a micro endpoint, registered through the
// proxy, called from the TypeScript client, from Rust (`micro call` through the
// proxy and directly), and over plain HTTP; renewal, deregistration, signals.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Client, MicroError, Service, type RequestContext } from "@micro/client";
import { binary, eventually, PACKAGE_DIR, run, sleep, startStack, type Stack } from "./harness.js";

let stack: Stack;
let client: Client;
let svc: Service;
let seen: RequestContext | undefined;

before(async () => {
  stack = await startStack();
  client = new Client({ address: stack.proxy });
  svc = new Service("tsworker", { address: stack.proxy, serverAddress: "127.0.0.1:0", metadata: { team: "ts" } });
  svc.handle(
    "Worker.Run",
    async (req: { job?: string; fail?: string; code?: number; sleep?: number }, ctx) => {
      seen = ctx;
      if (req.sleep) await new Promise((r) => setTimeout(r, req.sleep));
      if (req.fail === "error") throw new Error("the job broke");
      if (req.fail === "micro") throw new MicroError("tsworker", req.code ?? 409, `job ${req.job} is taken`);
      return { done: req.job ?? "", by: "typescript" };
    },
    { request: { name: "RunRequest", schema: { type: "object" } }, response: { name: "RunResponse" } },
  );
  svc.handleStream("Worker.Count", async function* (req: { to: number; failAt?: number }) {
    for (let i = 1; i <= req.to; i++) {
      if (i === req.failAt) throw MicroError.conflict("tsworker", `failed at ${i}`);
      yield { n: i };
    }
  });
  // Calls another service with the service's own client: TypeScript calling Rust.
  svc.handle("Worker.Greet", async (req: { name: string }) => {
    const rsp = await svc.client.call<{ message: string }>("greeter", "Greeter.Hello", { name: req.name });
    return { relayed: rsp.message };
  });
  await svc.start();
});

after(async () => {
  await svc?.stop();
  client?.close();
  await stack?.stop();
});

/** `micro <args>` through this stack's proxy; the JSON it prints. */
async function micro(...args: string[]): Promise<{ code: number | null; json: unknown; stderr: string }> {
  const { code, stdout, stderr } = await run(binary("micro"), args, { env: stack.env });
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    json = stdout;
  }
  return { code, json, stderr };
}

/** POSTs to the node itself, as an http-json caller. */
async function post(endpoint: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; json: unknown }> {
  const rsp = await fetch(`http://${svc.address}/`, { method: "POST", body, headers: { "micro-endpoint": endpoint, ...headers } });
  return { status: rsp.status, json: await rsp.json() };
}

describe("a TypeScript service", () => {
  test("registers as http-json with its endpoints", async () => {
    const [record] = await client.registry.getService("tsworker");
    assert.ok(record);
    assert.equal(record.version, "latest");
    assert.deepEqual(record.nodes.map((n) => [n.id, n.address, n.metadata["protocol"], n.metadata["team"]]), [
      [svc.id, svc.address, "http-json", "ts"],
    ]);
    assert.match(svc.address ?? "", /^127\.0\.0\.1:\d+$/);
    const endpoints = Object.fromEntries(record.endpoints.map((e) => [e.name, e]));
    assert.deepEqual(Object.keys(endpoints).sort(), ["Worker.Count", "Worker.Greet", "Worker.Run"]);
    assert.equal(endpoints["Worker.Run"]?.metadata["stream"], "false");
    assert.equal(endpoints["Worker.Count"]?.metadata["stream"], "server");
    assert.equal(endpoints["Worker.Run"]?.request?.name, "RunRequest");
    assert.deepEqual(endpoints["Worker.Run"]?.request?.schema, { type: "object" });
  });

  test("is called by the TypeScript client through the proxy", async () => {
    const rsp = await client.call("tsworker", "Worker.Run", { job: "j1" }, { metadata: { "x-trace": "t1" }, timeout: 4000 });
    assert.deepEqual(rsp, { done: "j1", by: "typescript" });
    assert.equal(seen?.endpoint, "Worker.Run");
    assert.equal(seen?.service, "tsworker");
    assert.equal(seen?.metadata["x-trace"], "t1");
    assert.equal(seen?.metadata["timeout"], undefined, "transport headers are not metadata");
    assert.ok(seen?.deadline && seen.deadline.getTime() > Date.now() && seen.deadline.getTime() < Date.now() + 4500);
  });

  test("is called from Rust: micro call --proxy", async () => {
    const { code, json, stderr } = await micro("call", "--proxy", stack.proxy, "-o", "json", "tsworker", "Worker.Run", '{"job":"from-rust"}');
    assert.equal(code, 0, stderr);
    assert.deepEqual(json, { done: "from-rust", by: "typescript" });
  });

  test("is called from Rust through the registry, without the proxy", async () => {
    const { code, json, stderr } = await micro("call", "-o", "json", "tsworker", "Worker.Run", '{"job":"direct"}');
    assert.equal(code, 0, stderr);
    assert.deepEqual(json, { done: "direct", by: "typescript" });
  });

  test("streams to Rust: micro stream --proxy", async () => {
    const { code, stdout, stderr } = await run(binary("micro"), ["stream", "--proxy", stack.proxy, "-o", "json", "tsworker", "Worker.Count", '{"to":3}'], { env: stack.env });
    assert.equal(code, 0, stderr);
    assert.deepEqual(stdout.trim().split("\n").map((l) => JSON.parse(l)), [{ n: 1 }, { n: 2 }, { n: 3 }]);
  });

  test("streams to the TypeScript client, with a failure mid-stream", async () => {
    const got: unknown[] = [];
    for await (const m of client.stream("tsworker", "Worker.Count", { to: 3 })) got.push(m);
    assert.deepEqual(got, [{ n: 1 }, { n: 2 }, { n: 3 }]);
    const partial: unknown[] = [];
    await assert.rejects(
      async () => {
        for await (const m of client.stream("tsworker", "Worker.Count", { to: 5, failAt: 3 })) partial.push(m);
      },
      (err: unknown) => err instanceof MicroError && err.code === 409 && err.detail === "failed at 3" && err.id === "tsworker",
    );
    assert.deepEqual(partial, [{ n: 1 }, { n: 2 }]);
  });

  test("a thrown Error is a 500 with its message", async () => {
    await assert.rejects(client.call("tsworker", "Worker.Run", { fail: "error" }), (err: unknown) => {
      assert.ok(err instanceof MicroError);
      assert.deepEqual(err.toJSON(), { id: "tsworker", code: 500, detail: "the job broke", status: "Internal Server Error" });
      return true;
    });
    const { code, stderr } = await micro("call", "--proxy", stack.proxy, "tsworker", "Worker.Run", '{"fail":"error"}');
    assert.notEqual(code, 0);
    assert.match(stderr, /the job broke/);
  });

  test("a thrown MicroError keeps its code, through the proxy and to Rust", async () => {
    await assert.rejects(client.call("tsworker", "Worker.Run", { fail: "micro", job: "x", code: 429 }), (err: unknown) => {
      assert.ok(err instanceof MicroError);
      assert.deepEqual(err.toJSON(), { id: "tsworker", code: 429, detail: "job x is taken", status: "Too Many Requests" });
      return true;
    });
    const { code, stderr } = await micro("call", "--proxy", stack.proxy, "tsworker", "Worker.Run", '{"fail":"micro","job":"y"}');
    assert.notEqual(code, 0);
    assert.match(stderr, /job y is taken \(409 Conflict\)/);
  });

  test("a slow handler is a 408 for its caller", async () => {
    await assert.rejects(client.call("tsworker", "Worker.Run", { sleep: 3000 }, { timeout: 300 }), (e: unknown) => e instanceof MicroError && e.code === 408);
  });

  test("calls a Rust service with its own client", async () => {
    assert.deepEqual(await client.call("tsworker", "Worker.Greet", { name: "Rust" }), { relayed: "Hello Rust" });
  });

  test("serves Debug.Health and Debug.Stats", async () => {
    assert.deepEqual(await client.call("tsworker", "Debug.Health", {}), { status: "ok" });
    const stats = await client.call("tsworker", "Debug.Stats", {});
    assert.equal(stats["service"], "tsworker");
    assert.equal(stats["version"], "latest");
    assert.ok(Number(stats["requests"]) > 0);
  });

  test("answers plain HTTP: unknown endpoint 404, bad JSON 400, path form", async () => {
    const unknown = await post("Worker.Nope", "{}");
    assert.equal(unknown.status, 404);
    assert.deepEqual(unknown.json, { id: "micro.server", code: 404, detail: "unknown endpoint Worker.Nope", status: "Not Found" });
    const bad = await post("Worker.Run", "{not json");
    assert.equal(bad.status, 400);
    assert.equal((bad.json as { code: number; id: string }).code, 400);
    assert.equal((bad.json as { code: number; id: string }).id, "micro.codec");
    const rsp = await fetch(`http://${svc.address}/tsworker.Worker/Run`, { method: "POST", body: '{"job":"path"}' });
    assert.equal(rsp.status, 200);
    assert.deepEqual(await rsp.json(), { done: "path", by: "typescript" });
    const get = await fetch(`http://${svc.address}/`);
    assert.equal(get.status, 405);
  });

  test("endpoints are added before start", () => {
    assert.throws(() => svc.handle("Worker.Late", () => ({})), (e: unknown) => e instanceof MicroError && e.code === 409);
    assert.throws(() => new Service("bad name"), (e: unknown) => e instanceof MicroError && e.code === 400);
  });
});

describe("registration", () => {
  test("is renewed before its TTL runs out, and removed on stop", async () => {
    const short = new Service("tsrenewed", { address: stack.proxy, serverAddress: "127.0.0.1:0", registerTtl: 2500, registerInterval: 400 });
    short.handle("Renewed.Ping", () => ({ pong: true }));
    await short.start();
    try {
      await sleep(4000); // well past the TTL
      const [record] = await client.registry.getService("tsrenewed");
      assert.deepEqual(record?.nodes.map((n) => n.id), [short.id]);
      assert.deepEqual(await client.call("tsrenewed", "Renewed.Ping", {}), { pong: true });
    } finally {
      await short.stop();
    }
    await assert.rejects(client.registry.getService("tsrenewed"), (e: unknown) => e instanceof MicroError && e.code === 404);
  });

  test("start fails when the proxy cannot be reached", async () => {
    const lost = new Service("tslost", { address: "127.0.0.1:1", serverAddress: "127.0.0.1:0" });
    await assert.rejects(lost.start(), (e: unknown) => e instanceof MicroError && e.code === 503);
    await lost.stop();
  });

  test("interval must be below the TTL", async () => {
    const wrong = new Service("tswrong", { address: stack.proxy, registerTtl: 1000, registerInterval: 1000 });
    await assert.rejects(wrong.start(), (e: unknown) => e instanceof MicroError && e.code === 400);
    await wrong.stop();
  });
});

/** Starts test/fixtures/worker.ts in a process of its own; resolves once it is registered. */
async function startWorker(env: Record<string, string>) {
  const child = spawn(process.execPath, [join(PACKAGE_DIR, "build/fixtures/worker.js")], {
    env: { ...stack.env, TEST_PROXY: stack.proxy, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.once("exit", (code, signal) => res({ code, signal })),
  );
  let out = "";
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const id = await new Promise<string>((res, rej) => {
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /ready (\S+)/.exec(out);
      if (m?.[1]) res(m[1]);
    });
    void exited.then(() => rej(new Error(`worker exited early: ${out}`)));
  });
  const kill = (signal: NodeJS.Signals): void => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, signal);
  };
  return { id, exited, kill };
}

describe("a service process", () => {
  test("deregisters on SIGTERM when it handles signals, and dies by it", async () => {
    const worker = await startWorker({ TEST_SIGNALS: "1" });
    try {
      const [record] = await client.registry.getService("tsprocess");
      assert.deepEqual(record?.nodes.map((n) => n.id), [worker.id]);
      worker.kill("SIGTERM");
      assert.deepEqual(await worker.exited, { code: null, signal: "SIGTERM" });
      await assert.rejects(client.registry.getService("tsprocess"), (e: unknown) => e instanceof MicroError && e.code === 404);
    } finally {
      worker.kill("SIGKILL");
    }
  });

  test("that dies without deregistering expires after its TTL", async () => {
    const worker = await startWorker({ TEST_TTL: "1500", TEST_INTERVAL: "500" });
    try {
      worker.kill("SIGKILL");
      await worker.exited;
      const [record] = await client.registry.getService("tsprocess");
      assert.deepEqual(record?.nodes.map((n) => n.id), [worker.id], "still listed right after");
      await eventually(
        "expiry",
        () => client.registry.getService("tsprocess").then(() => undefined, (e: unknown) => (e instanceof MicroError && e.code === 404 ? true : undefined)),
        8000,
      );
    } finally {
      worker.kill("SIGKILL");
    }
  });
});
