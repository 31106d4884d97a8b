// The persistent config store of `micro server`, through the proxy's Config API.
import { serverStream, unary } from "./rpc.js";
import { DeleteRequest, ListRequest, ReadRequest, WatchConfigRequest, WriteRequest, } from "./gen/micro/v1/config.js";
/**
 * Config values of `micro server` (`client.config`): one JSON tree addressed by
 * dot-separated paths (`greeter.greeting`); `""` is the whole tree.
 */
export class Config {
    conn;
    /** @internal Made by {@link Client}. */
    constructor(conn) {
        this.conn = conn;
    }
    /** The value at a path (an object for a path with keys under it). A path that is not set rejects with a 404 MicroError. */
    async get(path, options = {}) {
        const c = this.conn.config;
        const rsp = await unary(c.read.bind(c), ReadRequest.fromPartial({ path }), this.conn.metadata(), this.conn.request(options), `read config ${path}`);
        return (rsp.value ?? null);
    }
    /** Sets the value at a path (any JSON value, objects included); resolves once it is stored. */
    async set(path, value, options = {}) {
        const c = this.conn.config;
        const req = WriteRequest.fromPartial({ path, value });
        await unary(c.write.bind(c), req, this.conn.metadata(), this.conn.request(options), `write config ${path}`);
    }
    /** Deletes the value at a path and everything under it; deleting a path not set succeeds. */
    async delete(path, options = {}) {
        const c = this.conn.config;
        await unary(c.delete.bind(c), DeleteRequest.fromPartial({ path }), this.conn.metadata(), this.conn.request(options), `delete config ${path}`);
    }
    /** The leaf values under a path, each with its full path, in path order. */
    async list(path = "", options = {}) {
        const c = this.conn.config;
        const rsp = await unary(c.list.bind(c), ListRequest.fromPartial({ path }), this.conn.metadata(), this.conn.request(options), `list config ${path}`);
        return rsp.entries.map((e) => ({ path: e.path, value: (e.value ?? null) }));
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
    async *watch(path = "", options = {}) {
        const c = this.conn.config;
        const req = WatchConfigRequest.fromPartial({ path });
        const changes = serverStream(c.watch.bind(c), req, this.conn.metadata(), this.conn.request({ signal: options.signal }), `watch config ${path}`);
        for await (const change of changes) {
            yield { path: change.path, value: (change.value ?? null), deleted: change.deleted };
        }
    }
}
