// Starts real micro binaries for the tests: a `micro server` and a Rust
// `greeter` on free loopback ports, with a private registry directory and no
// mDNS, and stops exactly the processes it started, by PID.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, closeSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** clients/typescript (this file runs from build/test/). */
export const PACKAGE_DIR = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");
/** The repository's root. */
export const ROOT = resolve(PACKAGE_DIR, "../..");
/** Where cargo put the debug binaries. */
export const TARGET = join(process.env["CARGO_TARGET_DIR"] ?? join(ROOT, "target"), "debug");

export function binary(name: string): string {
  const path = join(TARGET, name);
  if (!existsSync(path)) throw new Error(`${path} is missing: run \`cargo build -p micro-cli -p greeter\` first`);
  return path;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const address = srv.address();
      const port = typeof address === "object" && address ? address.port : 0;
      srv.close(() => res(port));
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a value other than undefined, or fails after `timeout` ms. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeout = 10_000): Promise<T> {
  const deadline = Date.now() + timeout;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeout}ms${last ? `: ${String(last)}` : ""}`);
    await sleep(50);
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      res(true);
    });
    socket.once("error", () => res(false));
  });
}

/** One process a test started. */
export class Proc {
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly log: string,
  ) {
    this.exited = new Promise((res) => child.once("exit", (code, signal) => res({ code, signal })));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  logText(): string {
    return existsSync(this.log) ? readFileSync(this.log, "utf8") : "";
  }

  async waitForPort(port: number, timeout = 20_000): Promise<void> {
    const deadline = Date.now() + timeout;
    while (!(await portOpen(port))) {
      if (!this.running) throw new Error(`${this.name} exited early:\n${this.logText()}`);
      if (Date.now() > deadline) throw new Error(`${this.name} did not listen on ${port} within ${timeout}ms:\n${this.logText()}`);
      await sleep(50);
    }
  }

  /** SIGTERM, then SIGKILL after 15 s; resolves with how it ended. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running && this.child.pid !== undefined) {
      process.kill(this.child.pid, "SIGTERM");
      const killer = setTimeout(() => {
        if (this.running && this.child.pid !== undefined) process.kill(this.child.pid, "SIGKILL");
      }, 15_000);
      const result = await this.exited;
      clearTimeout(killer);
      return result;
    }
    return this.exited;
  }
}

/** A private world for one test file: a registry directory, a micro server, a greeter. */
export class Stack {
  readonly dir: string;
  /** The environment every process of this stack gets. */
  readonly env: NodeJS.ProcessEnv;
  /** The proxy's host:port. */
  proxy = "";
  /** The greeter's host:port, when started. */
  greeter = "";
  private readonly procs: Proc[] = [];

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), "micro-ts-"));
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      MICRO_MDNS_INTERFACES: "none",
      MICRO_REGISTRY_ADDRESS: join(this.dir, "registry"),
      RUST_LOG: "warn",
    };
    // Where *this* test's clients send calls is set per call, never inherited.
    delete env["MICRO_PROXY"];
    this.env = env;
  }

  /** Starts a process with the stack's environment, its output in a log file. */
  spawn(name: string, command: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}): Proc {
    const log = join(this.dir, `${name}.log`);
    const fd = openSync(log, "a");
    const child = spawn(command, args, { env: { ...this.env, ...extraEnv }, stdio: ["ignore", fd, fd] });
    closeSync(fd);
    const proc = new Proc(name, child, log);
    this.procs.push(proc);
    return proc;
  }

  async startServer(): Promise<void> {
    const [proxy, api, web] = [await freePort(), await freePort(), await freePort()];
    this.proxy = `127.0.0.1:${proxy}`;
    const server = this.spawn("micro-server", binary("micro"), [
      "server",
      "--proxy_address", this.proxy,
      "--api_address", `127.0.0.1:${api}`,
      "--web_address", `127.0.0.1:${web}`,
      "--data_dir", join(this.dir, "data"),
    ]);
    await server.waitForPort(proxy);
  }

  async startGreeter(): Promise<void> {
    const port = await freePort();
    this.greeter = `127.0.0.1:${port}`;
    const greeter = this.spawn("greeter", binary("greeter"), ["--server_address", this.greeter]);
    await greeter.waitForPort(port);
  }

  /** Stops what this stack started (newest first) and removes its directory. */
  async stop(): Promise<void> {
    for (const proc of this.procs.splice(0).reverse()) await proc.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A stack with `micro server` and, unless told otherwise, the greeter registered. */
export async function startStack(options: { greeter?: boolean } = {}): Promise<Stack> {
  const stack = new Stack();
  try {
    await stack.startServer();
    if (options.greeter ?? true) await stack.startGreeter();
  } catch (err) {
    await stack.stop();
    throw err;
  }
  return stack;
}

/** Runs a command to its end; resolves with its exit code and output. */
export function run(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", rej);
    child.once("close", (code) => res({ code, stdout, stderr }));
    child.stdin.end(options.input ?? "");
  });
}
