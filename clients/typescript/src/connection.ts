// One gRPC channel to the proxy, shared by the stubs of its five APIs.

import { credentials as grpcCredentials, Metadata, type ChannelCredentials } from "@grpc/grpc-js";
import { HealthClient } from "./gen/grpc/health/v1/health.js";
import { BrokerClient } from "./gen/micro/v1/broker.js";
import { ClientClient } from "./gen/micro/v1/client.js";
import { ConfigClient } from "./gen/micro/v1/config.js";
import { RegistryClient } from "./gen/micro/v1/registry.js";
import type { RequestOptions } from "./rpc.js";

/** Where `micro server`'s proxy listens when neither an option nor `MICRO_PROXY` says. */
export const DEFAULT_PROXY = "localhost:8081";

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
export function proxyAddress(address?: string): string {
  const chosen = address || process.env["MICRO_PROXY"] || DEFAULT_PROXY;
  // Accept a URL-ish `http://host:port` as people paste it from docs.
  return chosen.replace(/^[a-z]+:\/\//i, "").replace(/\/+$/, "");
}

/** The gRPC stubs of the proxy's APIs over one channel. */
export class Connection {
  readonly address: string;
  readonly client: ClientClient;
  readonly broker: BrokerClient;
  readonly registry: RegistryClient;
  readonly config: ConfigClient;
  readonly health: HealthClient;
  private readonly headers: Record<string, string>;
  // grpc-js lets calls in flight outlive a closed channel; this ends them.
  private readonly closing = new AbortController();

  constructor(options: ConnectionOptions = {}) {
    this.address = proxyAddress(options.address);
    this.headers = options.metadata ?? {};
    const creds = options.credentials ?? grpcCredentials.createInsecure();
    this.client = new ClientClient(this.address, creds);
    const shared = { channelOverride: this.client.getChannel() };
    this.broker = new BrokerClient(this.address, creds, shared);
    this.registry = new RegistryClient(this.address, creds, shared);
    this.config = new ConfigClient(this.address, creds, shared);
    this.health = new HealthClient(this.address, creds, shared);
  }

  /** Fresh gRPC metadata for one request (grpc-js may mutate what it is given). */
  metadata(): Metadata {
    const md = new Metadata();
    for (const [key, value] of Object.entries(this.headers)) md.set(key.toLowerCase(), value);
    return md;
  }

  /** A request's options, with a signal that also fires when the connection closes. */
  request(options: RequestOptions = {}): RequestOptions {
    const signal = options.signal ? AbortSignal.any([options.signal, this.closing.signal]) : this.closing.signal;
    return { timeout: options.timeout, signal };
  }

  /** Closes the channel and cancels the calls, streams and subscriptions in flight. */
  close(): void {
    this.closing.abort(new Error("the client was closed"));
    this.client.close();
  }
}
