import type { JsonObject, JsonValue } from "./json.js";
/** What a handler knows about the request it serves. */
export interface RequestContext {
    /** The service serving it. */
    service: string;
    /** The endpoint called, e.g. `Worker.Run`. */
    endpoint: string;
    /**
     * The call's metadata: its HTTP headers (lower-case) minus the transport ones
     * (`content-type`, `timeout`, `micro-endpoint`, …), as docs/wire.md says.
     */
    metadata: Record<string, string>;
    /** The caller's service name (`Micro-From-Service`), when it said. */
    fromService: string | undefined;
    /** When the caller stops waiting (from its `Timeout` header), if it said. */
    deadline: Date | undefined;
    /** Fires when the deadline passes or the caller goes away: stop working then. */
    signal: AbortSignal;
}
/** A unary handler: resolves to the answer, or throws (a {@link MicroError} to choose the code). */
export type Handler<Req = JsonObject, Res = JsonValue> = (request: Req, context: RequestContext) => Res | Promise<Res>;
/** A server-streaming handler: each item it yields is one answer. */
export type StreamHandler<Req = JsonObject, Res = JsonValue> = (request: Req, context: RequestContext) => AsyncIterable<Res> | Iterable<Res>;
/** A message type as the registry lists it. */
export interface TypeInfo {
    /** The message name, e.g. `RunRequest`. */
    name: string;
    /** The JSON Schema of its JSON form. */
    schema?: JsonValue;
}
/** What the registry says about an endpoint. */
export interface EndpointOptions {
    /** The request type (name and JSON Schema). */
    request?: TypeInfo;
    /** The response type (name and JSON Schema). */
    response?: TypeInfo;
    /** Extra endpoint metadata (`stream` is set by the library). */
    metadata?: Record<string, string>;
}
/** @internal One registered endpoint. */
export type Route = {
    kind: "unary";
    handler: Handler<unknown, unknown>;
    options: EndpointOptions;
} | {
    kind: "stream";
    handler: StreamHandler<unknown, unknown>;
    options: EndpointOptions;
};
