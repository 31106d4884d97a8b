import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { type CallOptions, type ChannelCredentials, Client, type ClientOptions, type ClientReadableStream, type ClientUnaryCall, type handleServerStreamingCall, type handleUnaryCall, type Metadata, type ServiceError, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { PublishRequest, PublishResponse } from "./broker.js";
export declare const protobufPackage = "micro.v1";
export declare const protobufFileName = "micro/v1/client.proto";
/**
 * The client service of `micro server`: call any registered service, and
 * publish, with nothing but the proxy's address. The proxy finds the service in
 * the registry, picks a node, and calls it with micro's client (retries, deadlines,
 * metadata), so a caller in any language gets micro's behaviour.
 *
 * JSON over HTTP is plain JSON: `POST /micro.v1.Client/Call` with
 * `{"service":"greeter","endpoint":"Greeter.Hello","request":{"name":"John"}}`
 * answers `{"response":{"message":"Hello John"}}`. gRPC callers may send the
 * encoded protobuf request in `body` instead and get the encoded response back in
 * `body`. Errors are the shared error (`{"id","code","detail","status"}` with the
 * HTTP status `code`; over gRPC the mapped status and the `micro-error` trailer),
 * passed on unchanged from the service called.
 */
/** One call. */
export interface CallRequest {
    /** The service's registered name, e.g. "greeter". */
    service: string;
    /** The endpoint, "Service.Method", e.g. "Greeter.Hello". */
    endpoint: string;
    /**
     * The request as JSON (the proto3 JSON form of the request message). Set this or
     * `body`; neither means `{}`.
     */
    request: any | undefined;
    /** The request encoded as protobuf; the answer then comes in `body`, protobuf too. */
    body: Buffer;
    /** Metadata sent to the service as headers (lower-case keys). */
    metadata: {
        [key: string]: string;
    };
    /**
     * How long the call may take, retries included, in milliseconds; 0 for the
     * proxy's default (5 s). A gRPC deadline on this call, if sooner, wins.
     */
    timeoutMs: number;
    /** Only nodes of this version; empty for any. */
    version: string;
    /** Call this "host:port" instead of looking the service up. */
    address: string;
}
export interface CallRequest_MetadataEntry {
    key: string;
    value: string;
}
/** The answer of one call (or one message of a stream). */
export interface CallResponse {
    /** The response as JSON, when the request was JSON. */
    response: any | undefined;
    /** The response encoded as protobuf, when the request was sent in `body`. */
    body: Buffer;
}
export declare const CallRequest: MessageFns<CallRequest>;
export declare const CallRequest_MetadataEntry: MessageFns<CallRequest_MetadataEntry>;
export declare const CallResponse: MessageFns<CallResponse>;
/** Call services and publish messages through the proxy. */
export type ClientService = typeof ClientService;
export declare const ClientService: {
    /** Calls one endpoint with one request and returns its answer. */
    readonly call: {
        readonly path: "/micro.v1.Client/Call";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: CallRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => CallRequest;
        readonly responseSerialize: (value: CallResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => CallResponse;
    };
    /**
     * Calls a server-streaming endpoint and streams its answers (over HTTP: NDJSON,
     * or server-sent events with `Accept: text/event-stream`).
     */
    readonly stream: {
        readonly path: "/micro.v1.Client/Stream";
        readonly requestStream: false;
        readonly responseStream: true;
        readonly requestSerialize: (value: CallRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => CallRequest;
        readonly responseSerialize: (value: CallResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => CallResponse;
    };
    /** Publishes a message on a topic (as `Broker.Publish`). */
    readonly publish: {
        readonly path: "/micro.v1.Client/Publish";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: PublishRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => PublishRequest;
        readonly responseSerialize: (value: PublishResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => PublishResponse;
    };
};
export interface ClientServer extends UntypedServiceImplementation {
    /** Calls one endpoint with one request and returns its answer. */
    call: handleUnaryCall<CallRequest, CallResponse>;
    /**
     * Calls a server-streaming endpoint and streams its answers (over HTTP: NDJSON,
     * or server-sent events with `Accept: text/event-stream`).
     */
    stream: handleServerStreamingCall<CallRequest, CallResponse>;
    /** Publishes a message on a topic (as `Broker.Publish`). */
    publish: handleUnaryCall<PublishRequest, PublishResponse>;
}
export interface ClientClient extends Client {
    /** Calls one endpoint with one request and returns its answer. */
    call(request: CallRequest, callback: (error: ServiceError | null, response: CallResponse) => void): ClientUnaryCall;
    call(request: CallRequest, metadata: Metadata, callback: (error: ServiceError | null, response: CallResponse) => void): ClientUnaryCall;
    call(request: CallRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: CallResponse) => void): ClientUnaryCall;
    /**
     * Calls a server-streaming endpoint and streams its answers (over HTTP: NDJSON,
     * or server-sent events with `Accept: text/event-stream`).
     */
    stream(request: CallRequest, options?: Partial<CallOptions>): ClientReadableStream<CallResponse>;
    stream(request: CallRequest, metadata?: Metadata, options?: Partial<CallOptions>): ClientReadableStream<CallResponse>;
    /** Publishes a message on a topic (as `Broker.Publish`). */
    publish(request: PublishRequest, callback: (error: ServiceError | null, response: PublishResponse) => void): ClientUnaryCall;
    publish(request: PublishRequest, metadata: Metadata, callback: (error: ServiceError | null, response: PublishResponse) => void): ClientUnaryCall;
    publish(request: PublishRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: PublishResponse) => void): ClientUnaryCall;
}
export declare const ClientClient: {
    new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): ClientClient;
    service: typeof ClientService;
    serviceName: string;
};
type Builtin = Date | Function | Uint8Array | string | number | boolean | undefined;
export type DeepPartial<T> = T extends Builtin ? T : T extends globalThis.Array<infer U> ? globalThis.Array<DeepPartial<U>> : T extends ReadonlyArray<infer U> ? ReadonlyArray<DeepPartial<U>> : T extends {} ? {
    [K in keyof T]?: DeepPartial<T[K]>;
} : Partial<T>;
export interface MessageFns<T> {
    encode(message: T, writer?: BinaryWriter): BinaryWriter;
    decode(input: BinaryReader | Uint8Array, length?: number): T;
    fromJSON(object: any): T;
    toJSON(message: T): unknown;
    create(base?: DeepPartial<T>): T;
    fromPartial(object: DeepPartial<T>): T;
}
export {};
