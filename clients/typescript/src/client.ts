// The entry point of the library: one connection to the proxy, and every API of
// `micro server` over it.

import { publish, Subscription, type MessageHandler, type PublishOptions, type SubscribeOptions } from "./broker.js";
import { Config } from "./config.js";
import { Connection, type ConnectionOptions } from "./connection.js";
import type { JsonObject, JsonValue } from "./json.js";
import { Registry } from "./registry.js";
import { serverStream, unary, type RequestOptions } from "./rpc.js";
import { CallRequest } from "./gen/micro/v1/client.js";
import { HealthCheckRequest, HealthCheckResponse_ServingStatus } from "./gen/grpc/health/v1/health.js";

/** Options of a {@link Client}. */
export interface ClientOptions extends ConnectionOptions {
  /**
   * Default timeout of {@link Client.call} and {@link Client.stream}, in
   * milliseconds; when unset the proxy's default (5 s) applies to calls.
   */
  timeout?: number;
}

/** Options of {@link Client.call} and {@link Client.stream}. */
export interface CallOptions extends RequestOptions {
  /** Metadata sent to the service as headers (lower-case keys). */
  metadata?: Record<string, string>;
  /** Only nodes of this version. */
  version?: string;
  /** Call this node (`host:port`) instead of looking the service up. */
  address?: string;
}

/** The serving status of `grpc.health.v1`. */
export type HealthStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

/**
 * A client of `micro server`: calls services, publishes and subscribes, reads the
 * registry and the config store, all through the proxy's gRPC API.
 *
 * ```ts
 * const client = new Client(); // MICRO_PROXY, else localhost:8081
 * const rsp = await client.call("greeter", "Greeter.Hello", { name: "John" });
 * client.close();
 * ```
 */
export class Client {
  /** The proxy's `host:port`. */
  readonly address: string;
  /** The registry: list, get, register, watch services. */
  readonly registry: Registry;
  /** The config store: get, set, delete, list, watch values. */
  readonly config: Config;
  private readonly conn: Connection;
  private readonly timeout: number | undefined;

  /**
   * Makes a client; the connection opens with the first request.
   *
   * @param options the proxy's `address` (default `MICRO_PROXY`, else
   *   `localhost:8081`), a default `timeout`, `metadata` for the proxy, `credentials`
   */
  constructor(options: ClientOptions = {}) {
    this.conn = new Connection(options);
    this.address = this.conn.address;
    this.timeout = options.timeout;
    this.registry = new Registry(this.conn);
    this.config = new Config(this.conn);
  }

  private callRequest(service: string, endpoint: string, request: JsonValue | undefined, options: CallOptions): CallRequest {
    const timeout = options.timeout ?? this.timeout;
    return CallRequest.fromPartial({
      service,
      endpoint,
      request: request ?? {},
      metadata: options.metadata ?? {},
      // The proxy's own client gets the timeout too, so a slow service is
      // reported by it as a 408 naming the service.
      timeoutMs: timeout !== undefined && timeout > 0 ? Math.ceil(timeout) : 0,
      version: options.version ?? "",
      address: options.address ?? "",
    });
  }

  /**
   * Calls one endpoint of a service with a JSON request and resolves to its JSON
   * answer. Rejects with a {@link MicroError}: the service's own error unchanged,
   * 404 for an unknown service, 408 when `timeout` runs out, and an `AbortError`
   * (code 499) when `signal` fires.
   *
   * @param service the registered name, e.g. `greeter`
   * @param endpoint `Service.Method`, e.g. `Greeter.Hello`
   * @param request the request message in proto3 JSON form (default `{}`)
   */
  async call<T = JsonObject>(service: string, endpoint: string, request?: JsonValue, options: CallOptions = {}): Promise<T> {
    const req = this.callRequest(service, endpoint, request, options);
    const c = this.conn.client;
    const opts = this.conn.request({ timeout: options.timeout ?? this.timeout, signal: options.signal });
    const rsp = await unary(c.call.bind(c), req, this.conn.metadata(), opts, `${service} ${endpoint}`);
    return (rsp.response ?? {}) as T;
  }

  /**
   * Calls a server-streaming endpoint; each answer arrives as one item of the
   * returned AsyncIterable. The call starts when the loop starts; breaking out of
   * it cancels the call. Failures are thrown from the loop as MicroError.
   *
   * ```ts
   * for await (const m of client.stream("greeter", "Greeter.Stream", { name: "John", count: 3 })) {
   *   console.log(m.message);
   * }
   * ```
   */
  stream<T = JsonObject>(
    service: string,
    endpoint: string,
    request?: JsonValue,
    options: CallOptions = {},
  ): AsyncGenerator<T, void, undefined> {
    const req = this.callRequest(service, endpoint, request, options);
    const c = this.conn.client;
    const opts = this.conn.request({ timeout: options.timeout ?? this.timeout, signal: options.signal });
    const responses = serverStream(c.stream.bind(c), req, this.conn.metadata(), opts, `${service} ${endpoint}`);
    return (async function* () {
      for await (const rsp of responses) yield (rsp.response ?? {}) as T;
    })();
  }

  /**
   * Publishes a message on a topic; resolves to the id the broker gave it. A JSON
   * value is sent as `application/json`; bytes (a Uint8Array) with
   * `options.contentType`.
   */
  publish(topic: string, message: JsonValue | Uint8Array, options: PublishOptions = {}): Promise<string> {
    return publish(this.conn, topic, message, options);
  }

  /**
   * Subscribes to a topic: `handler` gets each message, one at a time, until the
   * returned subscription is closed. With `queue`, the subscribers of that group
   * share the messages. Await `subscription.ready` before publishing what it must
   * receive.
   */
  subscribe(topic: string, handler: MessageHandler, options: SubscribeOptions = {}): Subscription {
    return new Subscription(this.conn, topic, handler, options);
  }

  /**
   * The `grpc.health.v1` status of the proxy (`service` `""`) or of one of its
   * APIs (`micro.v1.Registry`, …).
   */
  async health(service = "", options: RequestOptions = {}): Promise<HealthStatus> {
    const c = this.conn.health;
    const rsp = await unary(c.check.bind(c), HealthCheckRequest.fromPartial({ service }), this.conn.metadata(), this.conn.request(options), "health check");
    return (HealthCheckResponse_ServingStatus[rsp.status] ?? "UNKNOWN") as HealthStatus;
  }

  /** Closes the connection to the proxy; open streams and subscriptions end. */
  close(): void {
    this.conn.close();
  }
}
