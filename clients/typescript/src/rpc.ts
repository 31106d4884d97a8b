// Promise and AsyncIterable adapters over grpc-js calls: deadlines from a
// `timeout`, cancellation from an AbortSignal, and errors as MicroError.

import type {
  CallOptions as GrpcCallOptions,
  ClientReadableStream,
  ClientUnaryCall,
  Metadata,
  ServiceError,
} from "@grpc/grpc-js";
import { abortError, fromGrpcError } from "./errors.js";

/** Options every request to the proxy takes. */
export interface RequestOptions {
  /** How long it may take, in milliseconds (a gRPC deadline); none by default. */
  timeout?: number;
  /** Cancels the request; it then rejects with an `AbortError` MicroError (code 499). */
  signal?: AbortSignal;
}

type Callback<Res> = (err: ServiceError | null, res: Res) => void;
/** A generated unary method, bound to its stub. */
export type UnaryMethod<Req, Res> = (
  req: Req,
  md: Metadata,
  opts: Partial<GrpcCallOptions>,
  cb: Callback<Res>,
) => ClientUnaryCall;
/** A generated server-streaming method, bound to its stub. */
export type StreamMethod<Req, Res> = (req: Req, md: Metadata, opts: Partial<GrpcCallOptions>) => ClientReadableStream<Res>;

function grpcOptions(options: RequestOptions): Partial<GrpcCallOptions> {
  if (options.timeout === undefined || options.timeout <= 0) return {};
  return { deadline: new Date(Date.now() + options.timeout) };
}

/**
 * Runs one unary call.
 *
 * @param what names the call in error details, e.g. `greeter Greeter.Hello`
 */
export function unary<Req, Res>(
  method: UnaryMethod<Req, Res>,
  req: Req,
  md: Metadata,
  options: RequestOptions,
  what: string,
): Promise<Res> {
  const { signal } = options;
  return new Promise<Res>((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal, what));
      return;
    }
    const onAbort = (): void => call.cancel();
    const call = method(req, md, grpcOptions(options), (err, res) => {
      signal?.removeEventListener("abort", onAbort);
      if (err === null) resolve(res);
      else if (signal?.aborted) reject(abortError(signal, what));
      else reject(fromGrpcError(err, what));
    });
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A server stream as it starts: its messages, and a promise of its response head. */
export interface StartedStream<Res> {
  /** The messages; throws a MicroError when the stream fails. */
  messages: AsyncGenerator<Res, void, undefined>;
  /** Resolves when the proxy answered with its response head (the stream is open). */
  opened: Promise<void>;
}

/**
 * Starts a server-streaming call at once. Leaving the loop early (break, return,
 * throw) cancels the call, and so does the signal.
 */
export function startStream<Req, Res>(
  method: StreamMethod<Req, Res>,
  req: Req,
  md: Metadata,
  options: RequestOptions,
  what: string,
): StartedStream<Res> {
  const { signal } = options;
  if (signal?.aborted) {
    const err = abortError(signal, what);
    const opened = Promise.reject(err);
    opened.catch(() => undefined);
    return { opened, messages: failed(err) };
  }
  const call = method(req, md, grpcOptions(options));
  // Our own listener: grpc-js emits 'error' after a cancel too, when the loop that
  // read the stream is gone, and an 'error' without listener would crash the process.
  let failure: unknown;
  call.on("error", (err) => (failure = err));
  const opened = new Promise<void>((resolve, reject) => {
    call.once("metadata", () => resolve());
    call.once("error", (err) => reject(signal?.aborted ? abortError(signal, what) : fromGrpcError(err, what)));
    call.once("end", () => resolve());
  });
  opened.catch(() => undefined);
  const onAbort = (): void => call.cancel();
  signal?.addEventListener("abort", onAbort, { once: true });

  async function* messages(): AsyncGenerator<Res, void, undefined> {
    try {
      for await (const message of call as AsyncIterable<Res>) yield message;
      // grpc-js ends the readable side before it reports a failed status.
      if (failure !== undefined) throw failure;
    } catch (err) {
      throw signal?.aborted ? abortError(signal, what) : fromGrpcError(err, what);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      call.cancel();
    }
  }
  return { opened, messages: messages() };
}

/** A server stream as an AsyncIterable that starts when it is first read. */
export async function* serverStream<Req, Res>(
  method: StreamMethod<Req, Res>,
  req: Req,
  md: Metadata,
  options: RequestOptions,
  what: string,
): AsyncGenerator<Res, void, undefined> {
  yield* startStream(method, req, md, options, what).messages;
}

// eslint-disable-next-line require-yield
async function* failed(err: unknown): AsyncGenerator<never, void, undefined> {
  throw err;
}
