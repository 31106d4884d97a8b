// The JSON-over-HTTP/1.1 wire of an `http-json` node, as micro's client speaks
// it (crates/micro/src/client/attempt.rs, `attempt_http_json`): `POST /` with
// `Micro-Endpoint: Service.Method` (or `POST /<Service>/<Method>`), a JSON body,
// `Timeout: <n>ms`, metadata as headers; the answer is JSON, NDJSON lines for a
// stream, or the shared error JSON with its HTTP status.

import type { IncomingMessage, ServerResponse } from "node:http";
import { parseDuration } from "./duration.js";
import { MicroError } from "./errors.js";
import type { RequestContext, Route } from "./handler.js";

/** Largest request body accepted, as micro's default `--server_max_body` (4 MiB). */
export const MAX_BODY = 4 * 1024 * 1024;

const MAX_TIMER = 2 ** 31 - 1;

// Headers that are the transport's, not the call's metadata (docs/wire.md).
const TRANSPORT_HEADERS = new Set([
  "accept",
  "accept-encoding",
  "connection",
  "content-encoding",
  "content-length",
  "content-type",
  "grpc-accept-encoding",
  "grpc-encoding",
  "grpc-timeout",
  "host",
  "keep-alive",
  "micro-endpoint",
  "te",
  "timeout",
  "transfer-encoding",
  "upgrade",
]);

/** Counts what the node served, for `Debug.Stats`. */
export interface Counters {
  requests: number;
  errors: number;
}

/** The endpoint a request names: the `Micro-Endpoint` header, else its path. */
function endpointOf(req: IncomingMessage): string | undefined {
  const header = req.headers["micro-endpoint"];
  if (typeof header === "string" && header !== "") return header;
  // `/Service/Method` or `/package.Service/Method`.
  const path = (req.url ?? "/").split("?")[0] ?? "/";
  const match = /^\/(?:[\w.]*\.)?(\w+)\/(\w+)$/.exec(path);
  return match ? `${match[1]}.${match[2]}` : undefined;
}

function metadataOf(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(req.headers)) {
    if (value === undefined || TRANSPORT_HEADERS.has(key)) continue;
    out[key] = Array.isArray(value) ? value.join(",") : value;
  }
  return out;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > MAX_BODY) {
      reject(new MicroError("micro.server", 413, `request body is over the limit of ${MAX_BODY} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new MicroError("micro.server", 413, `request body is over the limit of ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function parseJson(body: Buffer): unknown {
  const text = body.toString("utf8").trim();
  if (text === "") return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new MicroError("micro.codec", 400, `invalid JSON request: ${(err as Error).message}`);
  }
}

/** A thrown value as the error to answer with. */
function asMicroError(service: string, err: unknown): MicroError {
  if (err instanceof MicroError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new MicroError(service, 500, detail || "handler failed", { cause: err });
}

function sendError(res: ServerResponse, err: MicroError): void {
  if (res.headersSent) {
    // Mid-stream: micro's client reads a `{"error":…}` line as the stream's error.
    res.end(JSON.stringify({ error: err.toJSON() }) + "\n");
    return;
  }
  const body = JSON.stringify(err.toJSON());
  res.writeHead(err.code, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === "object" && value !== null && Symbol.asyncIterator in value;
}

/** Rejects when the signal fires: with a 408 past the deadline, else 499 (the caller left). */
function whenAborted(signal: AbortSignal, endpoint: string): Promise<never> {
  return new Promise((_, reject) => {
    const fail = (): void => {
      const timedOut = signal.reason instanceof Error && signal.reason.name === "TimeoutError";
      reject(
        timedOut
          ? new MicroError("micro.server", 408, `${endpoint} did not finish before its deadline`)
          : new MicroError("micro.server", 499, `the caller of ${endpoint} went away`),
      );
    };
    if (signal.aborted) fail();
    else signal.addEventListener("abort", fail, { once: true });
  });
}

/**
 * The request listener of a node serving `routes` for `service`.
 */
export function httpHandler(
  service: string,
  routes: ReadonlyMap<string, Route>,
  counters: Counters,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void serve(service, routes, counters, req, res).catch((err: unknown) => {
      counters.errors++;
      sendError(res, asMicroError(service, err));
    });
  };
}

async function serve(
  service: string,
  routes: ReadonlyMap<string, Route>,
  counters: Counters,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  if (req.method !== "POST") {
    res.setHeader("allow", "POST");
    throw new MicroError("micro.server", 405, `use POST with a Micro-Endpoint header, not ${req.method}`);
  }
  const endpoint = endpointOf(req);
  if (endpoint === undefined) {
    throw new MicroError("micro.server", 404, "no endpoint named: POST to /<Service>/<Method> or send a Micro-Endpoint header");
  }
  counters.requests++;
  const route = routes.get(endpoint);
  if (route === undefined) throw new MicroError("micro.server", 404, `unknown endpoint ${endpoint}`);
  const request = parseJson(await readBody(req));

  // The call ends at its deadline, or when the caller closes the connection.
  const aborts: AbortSignal[] = [];
  const left = parseDuration(String(req.headers["timeout"] ?? ""));
  const deadline = left === undefined ? undefined : new Date(Date.now() + left);
  // Timers hold at most 2^31-1 ms (~24 days); a longer deadline (streams send a
  // year) is as good as none.
  if (left !== undefined && left < MAX_TIMER) aborts.push(AbortSignal.timeout(Math.max(1, left)));
  const gone = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) gone.abort();
  });
  aborts.push(gone.signal);
  const signal = AbortSignal.any(aborts);
  const from = req.headers["micro-from-service"];
  const context: RequestContext = {
    service,
    endpoint,
    metadata: metadataOf(req),
    fromService: typeof from === "string" ? from : undefined,
    deadline,
    signal,
  };
  const aborted = whenAborted(signal, endpoint);
  aborted.catch(() => undefined);

  if (route.kind === "unary") {
    const answer = await Promise.race([Promise.resolve(route.handler(request, context)), aborted]);
    const body = JSON.stringify(answer ?? {});
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
    return;
  }

  const items = route.handler(request, context);
  const iterator = isAsyncIterable(items) ? items[Symbol.asyncIterator]() : (items as Iterable<unknown>)[Symbol.iterator]();
  try {
    for (;;) {
      const next = await Promise.race([Promise.resolve(iterator.next()), aborted]);
      if (next.done) break;
      // The head goes out with the first answer, so an error before it keeps its status.
      if (!res.headersSent) res.writeHead(200, { "content-type": "application/x-ndjson" });
      if (!res.write(JSON.stringify(next.value ?? {}) + "\n")) {
        await Promise.race([new Promise<void>((resolve) => res.once("drain", resolve)), aborted]);
      }
    }
  } catch (err) {
    // The caller may be gone already; let the handler's generator clean up.
    void Promise.resolve(iterator.return?.()).catch(() => undefined);
    throw err;
  }
  if (!res.headersSent) res.writeHead(200, { "content-type": "application/x-ndjson" });
  res.end();
}
