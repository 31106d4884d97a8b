/** The JSON form of a micro error, as it travels on every wire. */
export interface MicroErrorJson {
    /** Who raised it: a service name or a micro component (`micro.client`, …). */
    id: string;
    /** An HTTP status code, 400–599. */
    code: number;
    /** The human-readable explanation. */
    detail: string;
    /** The reason phrase of `code`, e.g. `Not Found`. */
    status: string;
}
/** The `id` of errors raised by this library itself. */
export declare const CLIENT_ID = "micro.client";
/**
 * The reason phrase of an HTTP status code (`404` → `Not Found`); `499` is nginx's
 * "Client Closed Request", which micro uses for cancelled calls.
 */
export declare function statusText(code: number): string;
/**
 * A micro error: the shared `{id, code, detail, status}` as a JavaScript `Error`.
 *
 * Every promise of this library rejects with one, and every stream throws one.
 * A handler of a {@link Service} throws one to answer with a chosen code:
 *
 * ```ts
 * throw MicroError.badRequest("tsworker", "name is required");
 * ```
 *
 * A cancelled call (its `AbortSignal` fired) rejects with a MicroError whose
 * `name` is `"AbortError"` and `code` 499, so `err.name === "AbortError"` works
 * as with `fetch`.
 */
export declare class MicroError extends Error {
    /** Who raised it: a service name or a micro component. */
    readonly id: string;
    /** An HTTP status code, 400–599. */
    readonly code: number;
    /** The human-readable explanation (also the `message`). */
    readonly detail: string;
    /** The reason phrase of `code`. */
    readonly status: string;
    /**
     * @param id who raises it (a service name, or a component like `micro.client`)
     * @param code an HTTP status code; anything outside 400–599 becomes 500
     * @param detail the explanation
     * @param options `status` (default: the reason phrase of `code`) and `cause`
     */
    constructor(id: string, code: number, detail: string, options?: {
        status?: string;
        cause?: unknown;
    });
    /** 400 Bad Request. */
    static badRequest(id: string, detail: string): MicroError;
    /** 401 Unauthorized. */
    static unauthorized(id: string, detail: string): MicroError;
    /** 403 Forbidden. */
    static forbidden(id: string, detail: string): MicroError;
    /** 404 Not Found. */
    static notFound(id: string, detail: string): MicroError;
    /** 408 Request Timeout. */
    static timeout(id: string, detail: string): MicroError;
    /** 409 Conflict. */
    static conflict(id: string, detail: string): MicroError;
    /** 500 Internal Server Error. */
    static internal(id: string, detail: string): MicroError;
    /** 503 Service Unavailable. */
    static unavailable(id: string, detail: string): MicroError;
    /** Parses the error JSON; `undefined` when `text` is not one. */
    static parse(text: string): MicroError | undefined;
    /** The shared JSON form (what `JSON.stringify` writes). */
    toJSON(): MicroErrorJson;
}
/** The HTTP code micro maps a gRPC status code to (docs/wire.md). */
export declare function httpCodeOfGrpc(code: number): number;
/**
 * Turns a failure of a gRPC call into a MicroError: the `micro-error` trailer when
 * it is present and parses, else the gRPC status mapped back to an HTTP code.
 *
 * @param what names the call in the detail of a deadline error, e.g. `greeter Greeter.Hello`
 */
export declare function fromGrpcError(err: unknown, what?: string): MicroError;
/** The error a call rejects with when its AbortSignal fires. */
export declare function abortError(signal: AbortSignal, what: string): MicroError;
