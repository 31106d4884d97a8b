import type { Connection } from "./connection.js";
import type { JsonValue } from "./json.js";
import { type RequestOptions } from "./rpc.js";
/** One leaf value with its full path (from {@link Config.list}). */
export interface ConfigEntry {
    /** The full dot-separated path, e.g. `greeter.greeting`. */
    path: string;
    /** The value (never an object). */
    value: JsonValue;
}
/** The value of a watched path, now (from {@link Config.watch}). */
export interface ConfigChange {
    /** The watched path. */
    path: string;
    /** The value; `null` when deleted. */
    value: JsonValue;
    /** Whether the path is no longer set. */
    deleted: boolean;
}
/** Options of {@link Config.watch}. */
export interface WatchConfigOptions {
    /** Ends the watch: the loop then throws an `AbortError` MicroError. */
    signal?: AbortSignal;
}
/**
 * Config values of `micro server` (`client.config`): one JSON tree addressed by
 * dot-separated paths (`greeter.greeting`); `""` is the whole tree.
 */
export declare class Config {
    private readonly conn;
    /** @internal Made by {@link Client}. */
    constructor(conn: Connection);
    /** The value at a path (an object for a path with keys under it). A path that is not set rejects with a 404 MicroError. */
    get<T extends JsonValue = JsonValue>(path: string, options?: RequestOptions): Promise<T>;
    /** Sets the value at a path (any JSON value, objects included); resolves once it is stored. */
    set(path: string, value: JsonValue, options?: RequestOptions): Promise<void>;
    /** Deletes the value at a path and everything under it; deleting a path not set succeeds. */
    delete(path: string, options?: RequestOptions): Promise<void>;
    /** The leaf values under a path, each with its full path, in path order. */
    list(path?: string, options?: RequestOptions): Promise<ConfigEntry[]>;
    /**
     * The value at a path now, then after every change, in order. Breaking out of
     * the loop ends the watch.
     *
     * ```ts
     * for await (const change of client.config.watch("greeter.greeting")) {
     *   console.log(change.deleted ? "deleted" : change.value);
     * }
     * ```
     */
    watch(path?: string, options?: WatchConfigOptions): AsyncGenerator<ConfigChange, void, undefined>;
}
