import type { CallOptions as GrpcCallOptions, ClientReadableStream, ClientUnaryCall, Metadata, ServiceError } from "@grpc/grpc-js";
/** Options every request to the proxy takes. */
export interface RequestOptions {
    /** How long it may take, in milliseconds (a gRPC deadline); none by default. */
    timeout?: number;
    /** Cancels the request; it then rejects with an `AbortError` MicroError (code 499). */
    signal?: AbortSignal;
}
type Callback<Res> = (err: ServiceError | null, res: Res) => void;
/** A generated unary method, bound to its stub. */
export type UnaryMethod<Req, Res> = (req: Req, md: Metadata, opts: Partial<GrpcCallOptions>, cb: Callback<Res>) => ClientUnaryCall;
/** A generated server-streaming method, bound to its stub. */
export type StreamMethod<Req, Res> = (req: Req, md: Metadata, opts: Partial<GrpcCallOptions>) => ClientReadableStream<Res>;
/**
 * Runs one unary call.
 *
 * @param what names the call in error details, e.g. `greeter Greeter.Hello`
 */
export declare function unary<Req, Res>(method: UnaryMethod<Req, Res>, req: Req, md: Metadata, options: RequestOptions, what: string): Promise<Res>;
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
export declare function startStream<Req, Res>(method: StreamMethod<Req, Res>, req: Req, md: Metadata, options: RequestOptions, what: string): StartedStream<Res>;
/** A server stream as an AsyncIterable that starts when it is first read. */
export declare function serverStream<Req, Res>(method: StreamMethod<Req, Res>, req: Req, md: Metadata, options: RequestOptions, what: string): AsyncGenerator<Res, void, undefined>;
export {};
