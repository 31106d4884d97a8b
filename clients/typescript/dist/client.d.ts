import { Subscription, type MessageHandler, type PublishOptions, type SubscribeOptions } from "./broker.js";
import { Config } from "./config.js";
import { type ConnectionOptions } from "./connection.js";
import type { JsonObject, JsonValue } from "./json.js";
import { Registry } from "./registry.js";
import { type RequestOptions } from "./rpc.js";
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
export declare class Client {
    /** The proxy's `host:port`. */
    readonly address: string;
    /** The registry: list, get, register, watch services. */
    readonly registry: Registry;
    /** The config store: get, set, delete, list, watch values. */
    readonly config: Config;
    private readonly conn;
    private readonly timeout;
    /**
     * Makes a client; the connection opens with the first request.
     *
     * @param options the proxy's `address` (default `MICRO_PROXY`, else
     *   `localhost:8081`), a default `timeout`, `metadata` for the proxy, `credentials`
     */
    constructor(options?: ClientOptions);
    private callRequest;
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
    call<T = JsonObject>(service: string, endpoint: string, request?: JsonValue, options?: CallOptions): Promise<T>;
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
    stream<T = JsonObject>(service: string, endpoint: string, request?: JsonValue, options?: CallOptions): AsyncGenerator<T, void, undefined>;
    /**
     * Publishes a message on a topic; resolves to the id the broker gave it. A JSON
     * value is sent as `application/json`; bytes (a Uint8Array) with
     * `options.contentType`.
     */
    publish(topic: string, message: JsonValue | Uint8Array, options?: PublishOptions): Promise<string>;
    /**
     * Subscribes to a topic: `handler` gets each message, one at a time, until the
     * returned subscription is closed. With `queue`, the subscribers of that group
     * share the messages. Await `subscription.ready` before publishing what it must
     * receive.
     */
    subscribe(topic: string, handler: MessageHandler, options?: SubscribeOptions): Subscription;
    /**
     * The `grpc.health.v1` status of the proxy (`service` `""`) or of one of its
     * APIs (`micro.v1.Registry`, …).
     */
    health(service?: string, options?: RequestOptions): Promise<HealthStatus>;
    /** Closes the connection to the proxy; open streams and subscriptions end. */
    close(): void;
}
