import { Client } from "./client.js";
import type { ConnectionOptions } from "./connection.js";
import { MicroError } from "./errors.js";
import type { EndpointOptions, Handler, StreamHandler } from "./handler.js";
import type { JsonObject, JsonValue } from "./json.js";
import type { Service as ServiceRecord } from "./gen/micro/v1/registry.js";
/** The node metadata `protocol` of a node that speaks only JSON over HTTP. */
export declare const PROTOCOL_HTTP_JSON = "http-json";
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
export declare class Service {
    /** The registered name. */
    readonly name: string;
    /** The registered version. */
    readonly version: string;
    /** The node's id in the registry. */
    readonly id: string;
    /** A client over the same proxy, for handlers that call other services. */
    readonly client: Client;
    private readonly routes;
    private readonly options;
    private readonly counters;
    private readonly started;
    private server;
    private advertised;
    private heartbeat;
    private renewal;
    private stopping;
    private readonly onSignal;
    /**
     * @param name the service's name in the registry, e.g. `tsworker`
     */
    constructor(name: string, options?: ServiceOptions);
    /**
     * Serves `endpoint` (`Service.Method`, e.g. `Worker.Run`) with a function of
     * the JSON request to the JSON answer. Throw a {@link MicroError} to answer
     * with its code; any other throw is a 500.
     */
    handle<Req = JsonObject, Res = JsonValue>(endpoint: string, handler: Handler<Req, Res>, options?: EndpointOptions): this;
    /**
     * Serves a server-streaming `endpoint`: each item the handler yields (an async
     * generator is the easy way) is one answer.
     */
    handleStream<Req = JsonObject, Res = JsonValue>(endpoint: string, handler: StreamHandler<Req, Res>, options?: EndpointOptions): this;
    private addRoute;
    /** The registered `host:port` of this node, once started. */
    get address(): string | undefined;
    /** The registry record of this node: its endpoints (not the `Debug` ones) and itself. */
    record(): ServiceRecord;
    /**
     * Starts serving: listens, registers the node through the proxy, and renews the
     * registration every `registerInterval`. Rejects (and serves nothing) when it
     * cannot listen or register.
     */
    start(): Promise<void>;
    /**
     * Stops gracefully: deregisters, stops accepting connections, waits up to
     * `drainTimeout` for requests in flight, then closes. Idempotent.
     */
    stop(): Promise<void>;
    private shutdown;
    private stats;
}
