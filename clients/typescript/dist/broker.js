// Publish and subscribe through the proxy's Broker API.
import { MicroError } from "./errors.js";
import { startStream, unary } from "./rpc.js";
import { PublishRequest, SubscribeRequest } from "./gen/micro/v1/broker.js";
/** Publishes one message; resolves to its id. */
export async function publish(conn, topic, message, options = {}) {
    const bytes = message instanceof Uint8Array;
    const req = PublishRequest.fromPartial({
        topic,
        message: bytes ? undefined : message,
        body: bytes ? Buffer.from(message) : undefined,
        contentType: bytes ? (options.contentType ?? "") : "",
        headers: options.headers ?? {},
    });
    const rsp = await unary(conn.broker.publish.bind(conn.broker), req, conn.metadata(), conn.request(options), `publish on ${topic}`);
    return rsp.id;
}
function toBrokerMessage(m) {
    const out = { topic: m.topic, id: m.id, headers: m.headers };
    if (m.message !== undefined)
        out.message = m.message;
    if (m.body.length > 0)
        out.body = new Uint8Array(m.body);
    return out;
}
function printError(error, message) {
    const what = message ? `message ${message.id} on ${message.topic}` : "subscription";
    console.error(`micro: ${what}: ${error.message}`);
}
/**
 * A subscription to a topic: messages are handed to its handler, one at a time,
 * until {@link Subscription.close} (or the signal, or a failure of the stream).
 * A failed subscription is not renewed by itself: `onError` is told, `closed`
 * resolves, and a new `subscribe` starts over.
 */
export class Subscription {
    /** The topic. */
    topic;
    /** The queue group, or `undefined` for every message. */
    queue;
    /**
     * Resolves once the proxy has subscribed: a message published after that is
     * received. Rejects with a MicroError when subscribing fails.
     */
    ready;
    /** Resolves when the subscription has ended, by close() or by a failure. */
    closed;
    abort = new AbortController();
    /** @internal Made by {@link Client.subscribe}. */
    constructor(conn, topic, handler, options = {}) {
        this.topic = topic;
        this.queue = options.queue || undefined;
        const onError = options.onError ?? printError;
        // Ends on close(), and when the client closes.
        const signal = conn.request({ signal: this.abort.signal }).signal ?? this.abort.signal;
        const req = SubscribeRequest.fromPartial({ topic, queue: options.queue ?? "" });
        const stream = startStream(conn.broker.subscribe.bind(conn.broker), req, conn.metadata(), { signal }, `subscribe to ${topic}`);
        this.ready = stream.opened;
        this.closed = (async () => {
            try {
                for await (const m of stream.messages) {
                    const message = toBrokerMessage(m);
                    try {
                        await handler(message);
                    }
                    catch (err) {
                        const error = err instanceof MicroError ? err : new MicroError(topic, 500, err instanceof Error ? err.message : String(err), { cause: err });
                        onError(error, message);
                    }
                }
                // The proxy ended it (it is stopping): that is a failure for the subscriber.
                if (!signal.aborted)
                    onError(MicroError.unavailable("micro.client", `the proxy ended the subscription to ${topic}`));
            }
            catch (err) {
                // Closing is how a subscription ends; anything else is a failure to tell.
                if (!signal.aborted)
                    onError(err instanceof MicroError ? err : new MicroError("micro.client", 500, String(err)));
            }
        })();
        if (options.signal?.aborted)
            this.abort.abort();
        options.signal?.addEventListener("abort", () => this.abort.abort(), { once: true });
    }
    /** Ends the subscription (the proxy unsubscribes); idempotent. */
    close() {
        this.abort.abort();
        return this.closed;
    }
}
