// micro's one error shape, {id, code, detail, status}, and its mapping to and from
// gRPC statuses (docs/wire.md, "Errors"). Every failure of this library is a
// MicroError, so callers need one `catch` branch.

import { STATUS_CODES } from "node:http";
import { Metadata, status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";

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
export const CLIENT_ID = "micro.client";

/**
 * The reason phrase of an HTTP status code (`404` → `Not Found`); `499` is nginx's
 * "Client Closed Request", which micro uses for cancelled calls.
 */
export function statusText(code: number): string {
  if (code === 499) return "Client Closed Request";
  return STATUS_CODES[code] ?? "Internal Server Error";
}

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
export class MicroError extends Error {
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
  constructor(id: string, code: number, detail: string, options: { status?: string; cause?: unknown } = {}) {
    super(detail, options.cause === undefined ? undefined : { cause: options.cause });
    const valid = Number.isInteger(code) && code >= 400 && code <= 599;
    this.name = "MicroError";
    this.id = id;
    this.code = valid ? code : 500;
    this.detail = detail;
    this.status = valid && options.status ? options.status : statusText(this.code);
  }

  /** 400 Bad Request. */
  static badRequest(id: string, detail: string): MicroError {
    return new MicroError(id, 400, detail);
  }
  /** 401 Unauthorized. */
  static unauthorized(id: string, detail: string): MicroError {
    return new MicroError(id, 401, detail);
  }
  /** 403 Forbidden. */
  static forbidden(id: string, detail: string): MicroError {
    return new MicroError(id, 403, detail);
  }
  /** 404 Not Found. */
  static notFound(id: string, detail: string): MicroError {
    return new MicroError(id, 404, detail);
  }
  /** 408 Request Timeout. */
  static timeout(id: string, detail: string): MicroError {
    return new MicroError(id, 408, detail);
  }
  /** 409 Conflict. */
  static conflict(id: string, detail: string): MicroError {
    return new MicroError(id, 409, detail);
  }
  /** 500 Internal Server Error. */
  static internal(id: string, detail: string): MicroError {
    return new MicroError(id, 500, detail);
  }
  /** 503 Service Unavailable. */
  static unavailable(id: string, detail: string): MicroError {
    return new MicroError(id, 503, detail);
  }

  /** Parses the error JSON; `undefined` when `text` is not one. */
  static parse(text: string): MicroError | undefined {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return undefined;
    }
    if (typeof value !== "object" || value === null) return undefined;
    const v = value as Partial<Record<keyof MicroErrorJson, unknown>>;
    if (typeof v.code !== "number" || typeof v.detail !== "string") return undefined;
    return new MicroError(typeof v.id === "string" ? v.id : "", v.code, v.detail, {
      status: typeof v.status === "string" ? v.status : undefined,
    });
  }

  /** The shared JSON form (what `JSON.stringify` writes). */
  toJSON(): MicroErrorJson {
    return { id: this.id, code: this.code, detail: this.detail, status: this.status };
  }
}

// gRPC status → HTTP code, for errors that come without a `micro-error` trailer.
const FROM_GRPC: Record<number, number> = {
  [GrpcStatus.CANCELLED]: 499,
  [GrpcStatus.UNKNOWN]: 500,
  [GrpcStatus.INVALID_ARGUMENT]: 400,
  [GrpcStatus.DEADLINE_EXCEEDED]: 408,
  [GrpcStatus.NOT_FOUND]: 404,
  [GrpcStatus.ALREADY_EXISTS]: 409,
  [GrpcStatus.PERMISSION_DENIED]: 403,
  [GrpcStatus.RESOURCE_EXHAUSTED]: 429,
  [GrpcStatus.FAILED_PRECONDITION]: 412,
  [GrpcStatus.ABORTED]: 409,
  [GrpcStatus.OUT_OF_RANGE]: 400,
  [GrpcStatus.UNIMPLEMENTED]: 501,
  [GrpcStatus.INTERNAL]: 500,
  [GrpcStatus.UNAVAILABLE]: 503,
  [GrpcStatus.DATA_LOSS]: 500,
  [GrpcStatus.UNAUTHENTICATED]: 401,
};

/** The HTTP code micro maps a gRPC status code to (docs/wire.md). */
export function httpCodeOfGrpc(code: number): number {
  return FROM_GRPC[code] ?? 500;
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number" && "metadata" in err;
}

/**
 * Turns a failure of a gRPC call into a MicroError: the `micro-error` trailer when
 * it is present and parses, else the gRPC status mapped back to an HTTP code.
 *
 * @param what names the call in the detail of a deadline error, e.g. `greeter Greeter.Hello`
 */
export function fromGrpcError(err: unknown, what?: string): MicroError {
  if (err instanceof MicroError) return err;
  if (!isServiceError(err)) {
    const detail = err instanceof Error ? err.message : String(err);
    return new MicroError(CLIENT_ID, 500, detail, { cause: err });
  }
  const trailer = err.metadata instanceof Metadata ? err.metadata.get("micro-error")[0] : undefined;
  if (trailer !== undefined) {
    const parsed = MicroError.parse(trailer.toString());
    if (parsed) return parsed;
  }
  const code = httpCodeOfGrpc(err.code);
  let detail = err.details || err.message;
  if (err.code === GrpcStatus.DEADLINE_EXCEEDED && what) detail = `${what} did not answer in time`;
  return new MicroError(CLIENT_ID, code, detail, { cause: err });
}

/** The error a call rejects with when its AbortSignal fires. */
export function abortError(signal: AbortSignal, what: string): MicroError {
  const err = new MicroError(CLIENT_ID, 499, `${what} was cancelled`, { cause: signal.reason });
  err.name = "AbortError";
  return err;
}
