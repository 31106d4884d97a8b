// Publish and subscribe through the proxy's Broker API.

import { MicroError } from "./errors.js";
import type { Connection } from "./connection.js";
import type { JsonValue } from "./json.js";
import { startStream, unary, type RequestOptions } from "./rpc.js";
import { PublishRequest, SubscribeRequest, type Message } from "./gen/micro/v1/broker.js";

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
export async function publish(
  conn: Connection,
  topic: string,
  message: JsonValue | Uint8Array,
  options: PublishOptions = {},
): Promise<string> {
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

function toBrokerMessage(m: Message): BrokerMessage {
  const out: BrokerMessage = { topic: m.topic, id: m.id, headers: m.headers };
  if (m.message !== undefined) out.message = m.message as JsonValue;
  if (m.body.length > 0) out.body = new Uint8Array(m.body);
  return out;
}

function printError(error: MicroError, message?: BrokerMessage): void {
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
  private readonly abort = new AbortController();

  /** @internal Made by {@link Client.subscribe}. */
  constructor(conn: Connection, topic: string, handler: MessageHandler, options: SubscribeOptions = {}) {
    this.topic = topic;
    this.queue = options.queue || undefined;
    const onError = options.onError ?? printError;
    // Ends on close(), and when the client closes.
    const signal = conn.request({ signal: this.abort.signal }).signal ?? this.abort.signal;
    const req = SubscribeRequest.fromPartial({ topic, queue: options.queue ?? "" });
    const stream = startStream(
      conn.broker.subscribe.bind(conn.broker),
      req,
      conn.metadata(),
      { signal },
      `subscribe to ${topic}`,
    );
    this.ready = stream.opened;
    this.closed = (async () => {
      try {
        for await (const m of stream.messages) {
          const message = toBrokerMessage(m);
          try {
            await handler(message);
          } catch (err) {
            const error =
              err instanceof MicroError ? err : new MicroError(topic, 500, err instanceof Error ? err.message : String(err), { cause: err });
            onError(error, message);
          }
        }
        // The proxy ended it (it is stopping): that is a failure for the subscriber.
        if (!signal.aborted) onError(MicroError.unavailable("micro.client", `the proxy ended the subscription to ${topic}`));
      } catch (err) {
        // Closing is how a subscription ends; anything else is a failure to tell.
        if (!signal.aborted) onError(err instanceof MicroError ? err : new MicroError("micro.client", 500, String(err)));
      }
    })();
    if (options.signal?.aborted) this.abort.abort();
    options.signal?.addEventListener("abort", () => this.abort.abort(), { once: true });
  }

  /** Ends the subscription (the proxy unsubscribes); idempotent. */
  close(): Promise<void> {
    this.abort.abort();
    return this.closed;
  }
}
