import type { Connection } from "./connection.js";
import { type RequestOptions } from "./rpc.js";
import { type Service as ServiceRecord, type ServiceEvent } from "./gen/micro/v1/registry.js";
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
export declare class Registry {
    private readonly conn;
    /** @internal Made by {@link Client}. */
    constructor(conn: Connection);
    /** Every registered service: one record per name and version, with its nodes. */
    listServices(options?: RequestOptions): Promise<ServiceRecord[]>;
    /**
     * The records of one service (one per version), with endpoints and nodes.
     * An unknown service rejects with a 404 MicroError.
     */
    getService(service: string, options?: GetServiceOptions): Promise<ServiceRecord[]>;
    /** Registers (or renews) the nodes of a record for `ttl` seconds. */
    register(service: Partial<ServiceRecord> & {
        name: string;
    }, options?: RegisterOptions): Promise<void>;
    /** Removes the nodes of a record (name, version and node ids count) at once. */
    deregister(service: Partial<ServiceRecord> & {
        name: string;
    }, options?: RequestOptions): Promise<void>;
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
    watch(options?: WatchServicesOptions): AsyncGenerator<ServiceEvent, void, undefined>;
}
