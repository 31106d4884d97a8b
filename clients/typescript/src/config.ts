// The persistent config store of `micro server`, through the proxy's Config API.

import type { Connection } from "./connection.js";
import type { JsonValue } from "./json.js";
import { serverStream, unary, type RequestOptions } from "./rpc.js";
import {
  DeleteRequest,
  ListRequest,
  ReadRequest,
  WatchConfigRequest,
  WriteRequest,
} from "./gen/micro/v1/config.js";

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
export class Config {
  /** @internal Made by {@link Client}. */
  constructor(private readonly conn: Connection) {}

  /** The value at a path (an object for a path with keys under it). A path that is not set rejects with a 404 MicroError. */
  async get<T extends JsonValue = JsonValue>(path: string, options: RequestOptions = {}): Promise<T> {
    const c = this.conn.config;
    const rsp = await unary(c.read.bind(c), ReadRequest.fromPartial({ path }), this.conn.metadata(), this.conn.request(options), `read config ${path}`);
    return (rsp.value ?? null) as T;
  }

  /** Sets the value at a path (any JSON value, objects included); resolves once it is stored. */
  async set(path: string, value: JsonValue, options: RequestOptions = {}): Promise<void> {
    const c = this.conn.config;
    const req = WriteRequest.fromPartial({ path, value });
    await unary(c.write.bind(c), req, this.conn.metadata(), this.conn.request(options), `write config ${path}`);
  }

  /** Deletes the value at a path and everything under it; deleting a path not set succeeds. */
  async delete(path: string, options: RequestOptions = {}): Promise<void> {
    const c = this.conn.config;
    await unary(c.delete.bind(c), DeleteRequest.fromPartial({ path }), this.conn.metadata(), this.conn.request(options), `delete config ${path}`);
  }

  /** The leaf values under a path, each with its full path, in path order. */
  async list(path = "", options: RequestOptions = {}): Promise<ConfigEntry[]> {
    const c = this.conn.config;
    const rsp = await unary(c.list.bind(c), ListRequest.fromPartial({ path }), this.conn.metadata(), this.conn.request(options), `list config ${path}`);
    return rsp.entries.map((e) => ({ path: e.path, value: (e.value ?? null) as JsonValue }));
  }

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
  async *watch(path = "", options: WatchConfigOptions = {}): AsyncGenerator<ConfigChange, void, undefined> {
    const c = this.conn.config;
    const req = WatchConfigRequest.fromPartial({ path });
    const changes = serverStream(c.watch.bind(c), req, this.conn.metadata(), this.conn.request({ signal: options.signal }), `watch config ${path}`);
    for await (const change of changes) {
      yield { path: change.path, value: (change.value ?? null) as JsonValue, deleted: change.deleted };
    }
  }
}
