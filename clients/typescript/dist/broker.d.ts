import { MicroError } from "./errors.js";
import type { Connection } from "./connection.js";
import type { JsonValue } from "./json.js";
import { type RequestOptions } from "./rpc.js";
/** Options of {@link Client.publish}. */
export interface PublishOptions extends RequestOptions {
    /** Extra headers of the message (lower-case keys). */
    headers?: Record<string, string>;
    /** The content type of a message given as bytes (default `application/protobuf`). */
    contentType?: string;
}
/** One message received by a subscription. */
export interface BrokerMessage {
    /** The topic it came on. */
    topic: string;
    /** The message id given by the broker (its `micro-id` header). */
    id: string;
    /** Its headers (lower-case keys), `content-type` among them. */
    headers: Record<string, string>;
    /** The message as JSON, when its content type is JSON. */
    message?: JsonValue;
    /** The message as raw bytes, when it is not JSON. */
    body?: Uint8Array;
}
/** Called with each message of a subscription; awaited before the next one. */
export type MessageHandler = (message: BrokerMessage) => void | Promise<void>;
/** Options of {@link Client.subscribe}. */
export interface SubscribeOptions {
    /**
     * A queue group: each message goes to one subscriber of the group instead of to
     * every subscriber.
     */
    queue?: string;
    /**
     * Told of a handler that threw (with the message) and of a subscription that
     * failed (without). Default: print to stderr.
     */
    onError?: (error: MicroError, message?: BrokerMessage) => void;
    /** Closes the subscription when it fires. */
    signal?: AbortSignal;
}
/** Publishes one message; resolves to its id. */
export declare function publish(conn: Connection, topic: string, message: JsonValue | Uint8Array, options?: PublishOptions): Promise<string>;
/**
 * A subscription to a topic: messages are handed to its handler, one at a time,
 * until {@link Subscription.close} (or the signal, or a failure of the stream).
 * A failed subscription is not renewed by itself: `onError` is told, `closed`
 * resolves, and a new `subscribe` starts over.
 */
export declare class Subscription {
    /** The topic. */
    readonly topic: string;
    /** The queue group, or `undefined` for every message. */
    readonly queue: string | undefined;
    /**
     * Resolves once the proxy has subscribed: a message published after that is
     * received. Rejects with a MicroError when subscribing fails.
     */
    readonly ready: Promise<void>;
    /** Resolves when the subscription has ended, by close() or by a failure. */
    readonly closed: Promise<void>;
    private readonly abort;
    /** @internal Made by {@link Client.subscribe}. */
    constructor(conn: Connection, topic: string, handler: MessageHandler, options?: SubscribeOptions);
    /** Ends the subscription (the proxy unsubscribes); idempotent. */
    close(): Promise<void>;
}
