import { Metadata, type ChannelCredentials } from "@grpc/grpc-js";
import { HealthClient } from "./gen/grpc/health/v1/health.js";
import { BrokerClient } from "./gen/micro/v1/broker.js";
import { ClientClient } from "./gen/micro/v1/client.js";
import { ConfigClient } from "./gen/micro/v1/config.js";
import { RegistryClient } from "./gen/micro/v1/registry.js";
import type { RequestOptions } from "./rpc.js";
/** Where `micro server`'s proxy listens when neither an option nor `MICRO_PROXY` says. */
export declare const DEFAULT_PROXY = "localhost:8081";
/** How to reach the proxy; shared by {@link Client} and {@link Service}. */
export interface ConnectionOptions {
    /**
     * The proxy's `host:port`. Default: the `MICRO_PROXY` environment variable, else
     * `localhost:8081`.
     */
    address?: string;
    /** Channel credentials; default insecure (plain h2c, as `micro server` serves). */
    credentials?: ChannelCredentials;
    /**
     * gRPC metadata sent to the proxy with every request, e.g.
     * `{authorization: "Bearer …"}` when the proxy runs the `auth` wrapper.
     */
    metadata?: Record<string, string>;
}
/** The proxy address an option, `MICRO_PROXY` or the default names. */
export declare function proxyAddress(address?: string): string;
/** The gRPC stubs of the proxy's APIs over one channel. */
export declare class Connection {
    readonly address: string;
    readonly client: ClientClient;
    readonly broker: BrokerClient;
    readonly registry: RegistryClient;
    readonly config: ConfigClient;
    readonly health: HealthClient;
    private readonly headers;
    private readonly closing;
    constructor(options?: ConnectionOptions);
    /** Fresh gRPC metadata for one request (grpc-js may mutate what it is given). */
    metadata(): Metadata;
    /** A request's options, with a signal that also fires when the connection closes. */
    request(options?: RequestOptions): RequestOptions;
    /** Closes the channel and cancels the calls, streams and subscriptions in flight. */
    close(): void;
}
