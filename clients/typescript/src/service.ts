// Serving: TypeScript functions as the endpoints of a micro service. The node
// speaks JSON over HTTP/1.1 (protocol `http-json`) and registers itself through
// the proxy's Registry API, renewing its registration until it stops.

import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { networkInterfaces } from "node:os";
import { Client } from "./client.js";
import type { ConnectionOptions } from "./connection.js";
import { parseDuration } from "./duration.js";
import { MicroError } from "./errors.js";
import type { EndpointOptions, Handler, Route, StreamHandler } from "./handler.js";
import { httpHandler, type Counters } from "./http.js";
import type { JsonObject, JsonValue } from "./json.js";
import type { Service as ServiceRecord } from "./gen/micro/v1/registry.js";

/** The node metadata `protocol` of a node that speaks only JSON over HTTP. */
export const PROTOCOL_HTTP_JSON = "http-json";

/** Options of a {@link Service}; each falls back to its `MICRO_*` variable, then a default. */
export interface ServiceOptions extends Omit<ConnectionOptions, "metadata"> {
  /** gRPC metadata sent to the proxy with every request (as {@link ConnectionOptions.metadata}). */
  proxyMetadata?: Record<string, string>;
  /** The version registered (`MICRO_SERVER_VERSION`, default `latest`). */
  version?: string;
  /** The node's id (`MICRO_SERVER_ID`, default `<name>-<uuid>`). */
  id?: string;
  /**
   * Where to listen, `host:port` (`MICRO_SERVER_ADDRESS`, default `0.0.0.0:0`:
   * every interface, a free port). `:8080` means every interface.
   */
  serverAddress?: string;
  /** The `host:port` to register instead of the listening one (`MICRO_SERVER_ADVERTISE`). */
  advertise?: string;
  /** Extra node metadata (`MICRO_SERVER_METADATA`, `k=v,…`); `protocol` is always `http-json`. */
  metadata?: Record<string, string>;
  /** How long a registration lives unless renewed, in ms (`MICRO_REGISTER_TTL`, default 90 s). */
  registerTtl?: number;
  /** How often the registration is renewed, in ms (`MICRO_REGISTER_INTERVAL`, default 30 s). */
  registerInterval?: number;
  /** How long {@link Service.stop} waits for requests in flight, in ms (default 10 s). */
  drainTimeout?: number;
  /**
   * Stop gracefully (deregister, drain) on SIGTERM and SIGINT, then end the
   * process by that signal. Off by default: the program decides.
   */
  handleSignals?: boolean;
  /** Told of failed renewals and deregistrations. Default: print to stderr. */
  onError?: (error: MicroError) => void;
}

function env(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v === "" ? undefined : v;
}

function envDuration(name: string): number | undefined {
  const v = env(name);
  if (v === undefined) return undefined;
  const ms = parseDuration(v);
  if (ms === undefined) throw new MicroError("micro.server", 400, `${name}=${v} is not a duration (30, 30s, 500ms, 1m)`);
  return ms;
}

function envPairs(name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (env(name) ?? "").split(",")) {
    const at = pair.indexOf("=");
    if (at > 0) out[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
  }
  return out;
}

/** Splits `host:port`, `:port` or `[v6]:port`. */
function splitAddress(address: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]*)\]|([^:]*)):(\d+)$/.exec(address);
  if (!match) throw new MicroError("micro.server", 400, `${address} is not host:port`);
  return { host: match[1] ?? match[2] ?? "", port: Number(match[3]) };
}

function joinAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** An address others can reach when listening on every interface. */
function outwardHost(): string {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) {
      if (a.family === "IPv4" && !a.internal) return a.address;
    }
  }
  return "127.0.0.1";
}

function printError(error: MicroError): void {
  console.error(`micro: ${error.message}`);
}

/**
 * A micro service written in TypeScript: its handlers are endpoints that Rust
 * services, the CLI (`micro call`), the proxy and other clients call.
 *
 * ```ts
 * const svc = new Service("tsworker");
 * svc.handle("Worker.Run", async (req: { job: string }) => ({ done: req.job }));
 * await svc.start(); // listens, registers with the proxy, renews the registration
 * // … later
 * await svc.stop(); // deregisters, lets requests in flight finish
 * ```
 */
export class Service {
  /** The registered name. */
  readonly name: string;
  /** The registered version. */
  readonly version: string;
  /** The node's id in the registry. */
  readonly id: string;
  /** A client over the same proxy, for handlers that call other services. */
  readonly client: Client;
  private readonly routes = new Map<string, Route>();
  private readonly options: ServiceOptions;
  private readonly counters: Counters = { requests: 0, errors: 0 };
  private readonly started = Date.now();
  private server: Server | undefined;
  private advertised: string | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private renewal: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    void this.stop().finally(() => {
      // Then die by the signal as if we had not caught it (unless others listen).
      process.removeListener(signal, this.onSignal);
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  };

  /**
   * @param name the service's name in the registry, e.g. `tsworker`
   */
  constructor(name: string, options: ServiceOptions = {}) {
    if (!/^[\w.-]+$/.test(name)) throw new MicroError("micro.server", 400, `service name ${JSON.stringify(name)} must be letters, digits, '.', '-' or '_'`);
    this.name = name;
    this.options = options;
    this.version = options.version ?? env("MICRO_SERVER_VERSION") ?? "latest";
    this.id = options.id ?? env("MICRO_SERVER_ID") ?? `${name}-${randomUUID()}`;
    this.client = new Client({ address: options.address, credentials: options.credentials, metadata: options.proxyMetadata });
    this.handle("Debug.Health", () => ({ status: "ok" }));
    this.handle("Debug.Stats", () => this.stats());
  }

  /**
   * Serves `endpoint` (`Service.Method`, e.g. `Worker.Run`) with a function of
   * the JSON request to the JSON answer. Throw a {@link MicroError} to answer
   * with its code; any other throw is a 500.
   */
  handle<Req = JsonObject, Res = JsonValue>(endpoint: string, handler: Handler<Req, Res>, options: EndpointOptions = {}): this {
    this.addRoute(endpoint, { kind: "unary", handler: handler as Handler<unknown, unknown>, options });
    return this;
  }

  /**
   * Serves a server-streaming `endpoint`: each item the handler yields (an async
   * generator is the easy way) is one answer.
   */
  handleStream<Req = JsonObject, Res = JsonValue>(endpoint: string, handler: StreamHandler<Req, Res>, options: EndpointOptions = {}): this {
    this.addRoute(endpoint, { kind: "stream", handler: handler as StreamHandler<unknown, unknown>, options });
    return this;
  }

  private addRoute(endpoint: string, route: Route): void {
    if (!/^\w+\.\w+$/.test(endpoint)) throw new MicroError("micro.server", 400, `endpoint ${JSON.stringify(endpoint)} must be Service.Method`);
    if (this.server) throw new MicroError("micro.server", 409, `add ${endpoint} before start(): the registration lists the endpoints`);
    this.routes.set(endpoint, route);
  }

  /** The registered `host:port` of this node, once started. */
  get address(): string | undefined {
    return this.advertised;
  }

  /** The registry record of this node: its endpoints (not the `Debug` ones) and itself. */
  record(): ServiceRecord {
    const endpoints = [...this.routes]
      .filter(([name]) => !name.startsWith("Debug."))
      .map(([name, route]) => ({
        name,
        request: { name: route.options.request?.name ?? "", schema: route.options.request?.schema },
        response: { name: route.options.response?.name ?? "", schema: route.options.response?.schema },
        metadata: { ...route.options.metadata, stream: route.kind === "stream" ? "server" : "false" },
      }));
    const metadata = { ...envPairs("MICRO_SERVER_METADATA"), ...this.options.metadata, protocol: PROTOCOL_HTTP_JSON };
    return {
      name: this.name,
      version: this.version,
      metadata: {},
      endpoints,
      nodes: [{ id: this.id, address: this.advertised ?? "", metadata }],
    };
  }

  /**
   * Starts serving: listens, registers the node through the proxy, and renews the
   * registration every `registerInterval`. Rejects (and serves nothing) when it
   * cannot listen or register.
   */
  async start(): Promise<void> {
    if (this.server) throw new MicroError("micro.server", 409, `${this.name} is already started`);
    const ttl = this.options.registerTtl ?? envDuration("MICRO_REGISTER_TTL") ?? 90_000;
    const interval = this.options.registerInterval ?? envDuration("MICRO_REGISTER_INTERVAL") ?? 30_000;
    if (interval <= 0 || interval >= ttl) {
      throw new MicroError("micro.server", 400, `registerInterval (${interval}ms) must be above zero and below registerTtl (${ttl}ms)`);
    }
    const listen = splitAddress(this.options.serverAddress ?? env("MICRO_SERVER_ADDRESS") ?? "0.0.0.0:0");
    const server = createServer(httpHandler(this.name, this.routes, this.counters));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(listen.port, listen.host || undefined, () => {
        server.removeListener("error", reject);
        resolve();
      });
    });
    const port = (server.address() as AddressInfo).port;
    const every = listen.host === "" || listen.host === "0.0.0.0" || listen.host === "::";
    this.advertised = this.options.advertise ?? env("MICRO_SERVER_ADVERTISE") ?? joinAddress(every ? outwardHost() : listen.host, port);

    const ttlSeconds = Math.max(1, Math.ceil(ttl / 1000));
    // A renewal is useful until the previous registration runs out.
    const register = (): Promise<void> => this.client.registry.register(this.record(), { ttl: ttlSeconds, timeout: ttl - interval });
    try {
      await register();
    } catch (err) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      this.server = undefined;
      throw err;
    }
    const onError = this.options.onError ?? printError;
    // The next renewal is planned when one ends, so that a slow proxy never has
    // two in flight.
    const renew = (): void => {
      this.heartbeat = setTimeout(() => {
        this.renewal = register()
          .catch((err: MicroError) => onError(err))
          .finally(() => {
            this.renewal = undefined;
            if (this.stopping === undefined) renew();
          });
      }, interval);
      // The HTTP server keeps the process alive, not the renewals.
      this.heartbeat.unref();
    };
    renew();
    if (this.options.handleSignals) {
      process.on("SIGTERM", this.onSignal);
      process.on("SIGINT", this.onSignal);
    }
  }

  /**
   * Stops gracefully: deregisters, stops accepting connections, waits up to
   * `drainTimeout` for requests in flight, then closes. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    process.removeListener("SIGTERM", this.onSignal);
    process.removeListener("SIGINT", this.onSignal);
    clearTimeout(this.heartbeat);
    const server = this.server;
    if (server) {
      // A renewal landing after the deregistration would bring the node back.
      await this.renewal;
      try {
        await this.client.registry.deregister(this.record(), { timeout: 5000 });
      } catch (err) {
        (this.options.onError ?? printError)(err as MicroError);
      }
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const drain = setTimeout(() => server.closeAllConnections(), this.options.drainTimeout ?? 10_000);
      await closed;
      clearTimeout(drain);
    }
    this.client.close();
  }

  private stats(): JsonObject {
    // uint64 fields: strings in proto3 JSON, and left out when zero (as Rust's).
    const fields: Record<string, number> = {
      started: Math.floor(this.started / 1000),
      uptime: Math.floor((Date.now() - this.started) / 1000),
      memory: process.memoryUsage.rss(),
      threads: 1,
      requests: this.counters.requests,
      errors: this.counters.errors,
    };
    const out: JsonObject = {};
    for (const [key, value] of Object.entries(fields)) if (value !== 0) out[key] = String(value);
    out["service"] = this.name;
    out["version"] = this.version;
    return out;
  }
}
