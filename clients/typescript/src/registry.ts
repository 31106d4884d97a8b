// Discovery through the proxy's Registry API.

import type { Connection } from "./connection.js";
import { serverStream, unary, type RequestOptions } from "./rpc.js";
import {
  DeregisterRequest,
  GetServiceRequest,
  ListServicesRequest,
  RegisterRequest,
  WatchServicesRequest,
  type Service as ServiceRecord,
  type ServiceEvent,
} from "./gen/micro/v1/registry.js";

/** Options of {@link Registry.getService}. */
export interface GetServiceOptions extends RequestOptions {
  /** Only this version; every version by default. */
  version?: string;
}

/** Options of {@link Registry.register}. */
export interface RegisterOptions extends RequestOptions {
  /** How long the registration lives unless renewed, in seconds (proxy default 90). */
  ttl?: number;
}

/** Options of {@link Registry.watch}. */
export interface WatchServicesOptions {
  /** Only this service; all by default. */
  service?: string;
  /** Ends the watch: the loop then throws an `AbortError` MicroError. */
  signal?: AbortSignal;
}

/** The registry of `micro server`, reached through its proxy (`client.registry`). */
export class Registry {
  /** @internal Made by {@link Client}. */
  constructor(private readonly conn: Connection) {}

  /** Every registered service: one record per name and version, with its nodes. */
  async listServices(options: RequestOptions = {}): Promise<ServiceRecord[]> {
    const c = this.conn.registry;
    const rsp = await unary(c.listServices.bind(c), ListServicesRequest.fromPartial({}), this.conn.metadata(), this.conn.request(options), "list services");
    return rsp.services;
  }

  /**
   * The records of one service (one per version), with endpoints and nodes.
   * An unknown service rejects with a 404 MicroError.
   */
  async getService(service: string, options: GetServiceOptions = {}): Promise<ServiceRecord[]> {
    const c = this.conn.registry;
    const req = GetServiceRequest.fromPartial({ service, version: options.version ?? "" });
    const rsp = await unary(c.getService.bind(c), req, this.conn.metadata(), this.conn.request(options), `get service ${service}`);
    return rsp.services;
  }

  /** Registers (or renews) the nodes of a record for `ttl` seconds. */
  async register(service: Partial<ServiceRecord> & { name: string }, options: RegisterOptions = {}): Promise<void> {
    const c = this.conn.registry;
    const req = RegisterRequest.fromPartial({ service, ttlSeconds: options.ttl ?? 0 });
    await unary(c.register.bind(c), req, this.conn.metadata(), this.conn.request(options), `register ${service.name}`);
  }

  /** Removes the nodes of a record (name, version and node ids count) at once. */
  async deregister(service: Partial<ServiceRecord> & { name: string }, options: RequestOptions = {}): Promise<void> {
    const c = this.conn.registry;
    const req = DeregisterRequest.fromPartial({ service });
    await unary(c.deregister.bind(c), req, this.conn.metadata(), this.conn.request(options), `deregister ${service.name}`);
  }

  /**
   * The changes of the registry as they happen, starting with the current state
   * as `create` events. Breaking out of the loop ends the watch.
   *
   * ```ts
   * for await (const event of client.registry.watch({ service: "greeter" })) {
   *   console.log(event.action, event.service?.nodes.map((n) => n.address));
   * }
   * ```
   */
  watch(options: WatchServicesOptions = {}): AsyncGenerator<ServiceEvent, void, undefined> {
    const c = this.conn.registry;
    const req = WatchServicesRequest.fromPartial({ service: options.service ?? "" });
    return serverStream(c.watch.bind(c), req, this.conn.metadata(), this.conn.request({ signal: options.signal }), "watch the registry");
  }
}
