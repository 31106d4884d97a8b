import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { type CallOptions, type ChannelCredentials, Client, type ClientOptions, type ClientReadableStream, type ClientUnaryCall, type handleServerStreamingCall, type handleUnaryCall, type Metadata, type ServiceError, type UntypedServiceImplementation } from "@grpc/grpc-js";
export declare const protobufPackage = "micro.v1";
export declare const protobufFileName = "micro/v1/config.proto";
/**
 * The config service of `micro server`: a persistent tree of JSON values, read
 * and watched by services (`--config service`), changed by people and tools
 * (`micro config set`). Values survive restarts of `micro server` (they are kept in
 * an embedded database under its `--data_dir`).
 *
 * Paths are dot-separated keys into the tree (`greeter.greeting`); the empty path
 * is the whole tree. Values are JSON (any JSON value). Served by the proxy as gRPC
 * and as JSON over HTTP (`POST /micro.v1.Config/Read` with `{"path":"greeter"}`).
 */
/** The request of Read. */
export interface ReadRequest {
    /** The path, e.g. "greeter.greeting"; empty for the whole tree. */
    path: string;
}
/** The answer of Read. */
export interface ReadResponse {
    /** The value at the path (a table for a path with keys under it). */
    value: any | undefined;
}
/** The request of Write. */
export interface WriteRequest {
    /** The path to set; not empty. */
    path: string;
    /** The new value. */
    value: any | undefined;
}
/** The answer of Write; it has no fields. */
export interface WriteResponse {
}
/** The request of Delete. */
export interface DeleteRequest {
    /** The path to delete; not empty. */
    path: string;
}
/** The answer of Delete; it has no fields. */
export interface DeleteResponse {
}
/** The request of List. */
export interface ListRequest {
    /** The path under which to list; empty for everything. */
    path: string;
}
/** One leaf value with its path. */
export interface Entry {
    /** The full path of the value. */
    path: string;
    /** The value (never a table). */
    value: any | undefined;
}
/** The answer of List. */
export interface ListResponse {
    /** The leaf values under the path. */
    entries: Entry[];
}
/** The request of Watch. */
export interface WatchConfigRequest {
    /** The path to watch; empty for the whole tree. */
    path: string;
}
/** The value of a watched path, now. */
export interface ConfigChange {
    /** The watched path. */
    path: string;
    /** The value (null when deleted). */
    value: any | undefined;
    /** Whether the path is no longer set. */
    deleted: boolean;
}
export declare const ReadRequest: MessageFns<ReadRequest>;
export declare const ReadResponse: MessageFns<ReadResponse>;
export declare const WriteRequest: MessageFns<WriteRequest>;
export declare const WriteResponse: MessageFns<WriteResponse>;
export declare const DeleteRequest: MessageFns<DeleteRequest>;
export declare const DeleteResponse: MessageFns<DeleteResponse>;
export declare const ListRequest: MessageFns<ListRequest>;
export declare const Entry: MessageFns<Entry>;
export declare const ListResponse: MessageFns<ListResponse>;
export declare const WatchConfigRequest: MessageFns<WatchConfigRequest>;
export declare const ConfigChange: MessageFns<ConfigChange>;
/** Read, write, delete, list and watch config values. */
export type ConfigService = typeof ConfigService;
export declare const ConfigService: {
    /** The value at a path. A path that is not set is a 404 (gRPC NOT_FOUND). */
    readonly read: {
        readonly path: "/micro.v1.Config/Read";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: ReadRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => ReadRequest;
        readonly responseSerialize: (value: ReadResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => ReadResponse;
    };
    /**
     * Sets the value at a path, creating the tables above it. Acknowledged only once
     * the value is durably stored.
     */
    readonly write: {
        readonly path: "/micro.v1.Config/Write";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: WriteRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => WriteRequest;
        readonly responseSerialize: (value: WriteResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => WriteResponse;
    };
    /**
     * Deletes the value at a path and everything under it. Deleting a path that is
     * not set succeeds.
     */
    readonly delete: {
        readonly path: "/micro.v1.Config/Delete";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: DeleteRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => DeleteRequest;
        readonly responseSerialize: (value: DeleteResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => DeleteResponse;
    };
    /** The leaf values under a path, each with its full path, in path order. */
    readonly list: {
        readonly path: "/micro.v1.Config/List";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: ListRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => ListRequest;
        readonly responseSerialize: (value: ListResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => ListResponse;
    };
    /**
     * A stream of the values at a path: the current value first, then every change
     * (a deletion is `deleted: true`), in the order the changes were made.
     */
    readonly watch: {
        readonly path: "/micro.v1.Config/Watch";
        readonly requestStream: false;
        readonly responseStream: true;
        readonly requestSerialize: (value: WatchConfigRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => WatchConfigRequest;
        readonly responseSerialize: (value: ConfigChange) => Buffer;
        readonly responseDeserialize: (value: Buffer) => ConfigChange;
    };
};
export interface ConfigServer extends UntypedServiceImplementation {
    /** The value at a path. A path that is not set is a 404 (gRPC NOT_FOUND). */
    read: handleUnaryCall<ReadRequest, ReadResponse>;
    /**
     * Sets the value at a path, creating the tables above it. Acknowledged only once
     * the value is durably stored.
     */
    write: handleUnaryCall<WriteRequest, WriteResponse>;
    /**
     * Deletes the value at a path and everything under it. Deleting a path that is
     * not set succeeds.
     */
    delete: handleUnaryCall<DeleteRequest, DeleteResponse>;
    /** The leaf values under a path, each with its full path, in path order. */
    list: handleUnaryCall<ListRequest, ListResponse>;
    /**
     * A stream of the values at a path: the current value first, then every change
     * (a deletion is `deleted: true`), in the order the changes were made.
     */
    watch: handleServerStreamingCall<WatchConfigRequest, ConfigChange>;
}
export interface ConfigClient extends Client {
    /** The value at a path. A path that is not set is a 404 (gRPC NOT_FOUND). */
    read(request: ReadRequest, callback: (error: ServiceError | null, response: ReadResponse) => void): ClientUnaryCall;
    read(request: ReadRequest, metadata: Metadata, callback: (error: ServiceError | null, response: ReadResponse) => void): ClientUnaryCall;
    read(request: ReadRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: ReadResponse) => void): ClientUnaryCall;
    /**
     * Sets the value at a path, creating the tables above it. Acknowledged only once
     * the value is durably stored.
     */
    write(request: WriteRequest, callback: (error: ServiceError | null, response: WriteResponse) => void): ClientUnaryCall;
    write(request: WriteRequest, metadata: Metadata, callback: (error: ServiceError | null, response: WriteResponse) => void): ClientUnaryCall;
    write(request: WriteRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: WriteResponse) => void): ClientUnaryCall;
    /**
     * Deletes the value at a path and everything under it. Deleting a path that is
     * not set succeeds.
     */
    delete(request: DeleteRequest, callback: (error: ServiceError | null, response: DeleteResponse) => void): ClientUnaryCall;
    delete(request: DeleteRequest, metadata: Metadata, callback: (error: ServiceError | null, response: DeleteResponse) => void): ClientUnaryCall;
    delete(request: DeleteRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: DeleteResponse) => void): ClientUnaryCall;
    /** The leaf values under a path, each with its full path, in path order. */
    list(request: ListRequest, callback: (error: ServiceError | null, response: ListResponse) => void): ClientUnaryCall;
    list(request: ListRequest, metadata: Metadata, callback: (error: ServiceError | null, response: ListResponse) => void): ClientUnaryCall;
    list(request: ListRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: ListResponse) => void): ClientUnaryCall;
    /**
     * A stream of the values at a path: the current value first, then every change
     * (a deletion is `deleted: true`), in the order the changes were made.
     */
    watch(request: WatchConfigRequest, options?: Partial<CallOptions>): ClientReadableStream<ConfigChange>;
    watch(request: WatchConfigRequest, metadata?: Metadata, options?: Partial<CallOptions>): ClientReadableStream<ConfigChange>;
}
export declare const ConfigClient: {
    new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): ConfigClient;
    service: typeof ConfigService;
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
