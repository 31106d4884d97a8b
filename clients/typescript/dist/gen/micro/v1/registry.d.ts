import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { type CallOptions, type ChannelCredentials, Client, type ClientOptions, type ClientReadableStream, type ClientUnaryCall, type handleServerStreamingCall, type handleUnaryCall, type Metadata, type ServiceError, type UntypedServiceImplementation } from "@grpc/grpc-js";
export declare const protobufPackage = "micro.v1";
export declare const protobufFileName = "micro/v1/registry.proto";
/**
 * The registry service of `micro server`: where services find each other.
 *
 * Served by the proxy (`micro proxy`, port 8081) as gRPC and as JSON over HTTP on
 * the same port, with the same paths (`POST /micro.v1.Registry/ListServices`). A
 * program in any language can discover services with it, and register its own
 * nodes so that micro services, the CLI and the API gateway call them.
 *
 * The records are those of DESIGN.md ("The registry record"): a service has a name,
 * a version, metadata, endpoints and nodes; each version of a service is one
 * record.
 */
/** One version of a service. */
export interface Service {
    /** The service's name, e.g. "greeter". */
    name: string;
    /** The version, "latest" unless the service says otherwise. */
    version: string;
    /** Free-form metadata of the service. */
    metadata: {
        [key: string]: string;
    };
    /** What the service serves, and what it subscribes to. */
    endpoints: Endpoint[];
    /** The running instances. */
    nodes: Node[];
}
export interface Service_MetadataEntry {
    key: string;
    value: string;
}
/** One running instance of a service. */
export interface Node {
    /** Unique id of the node, e.g. "greeter-3f2a…". */
    id: string;
    /** Where it listens, "host:port". */
    address: string;
    /**
     * Node metadata. `protocol` says how to call it: "grpc+json" for micro services
     * (gRPC and JSON on one port), "http-json" for a node that only speaks JSON over
     * HTTP (`POST /` with header `Micro-Endpoint: Service.Method`, or
     * `POST /<Service>/<Method>`): micro calls it that way.
     */
    metadata: {
        [key: string]: string;
    };
}
export interface Node_MetadataEntry {
    key: string;
    value: string;
}
/** One endpoint: a method (`Greeter.Hello`) or a subscription (named by its topic). */
export interface Endpoint {
    /** "Service.Method", or the topic of a subscription. */
    name: string;
    /** The request message type. */
    request: Type | undefined;
    /** The response message type. */
    response: Type | undefined;
    /**
     * `stream` ("false", "server", "client", "bidi") for methods; `topic`, `queue`
     * and `subscriber: "true"` for subscriptions.
     */
    metadata: {
        [key: string]: string;
    };
}
export interface Endpoint_MetadataEntry {
    key: string;
    value: string;
}
/** A message type. */
export interface Type {
    /** The message name, e.g. "HelloRequest". */
    name: string;
    /** The JSON Schema of the message's JSON form (null when unknown). */
    schema: any | undefined;
}
/** The request of ListServices; it has no fields. */
export interface ListServicesRequest {
}
/** The answer of ListServices. */
export interface ListServicesResponse {
    /** Every service record. */
    services: Service[];
}
/** The request of GetService. */
export interface GetServiceRequest {
    /** The service's name. */
    service: string;
    /** Only this version; empty for every version. */
    version: string;
}
/** The answer of GetService. */
export interface GetServiceResponse {
    /** The records of the service, one per version. */
    services: Service[];
}
/** The request of Register. */
export interface RegisterRequest {
    /** The record to register; its nodes are added (or renewed). */
    service: Service | undefined;
    /** How long the registration lives unless renewed, in seconds (default 90). */
    ttlSeconds: number;
}
/** The answer of Register; it has no fields. */
export interface RegisterResponse {
}
/** The request of Deregister. */
export interface DeregisterRequest {
    /** The record whose nodes are removed (name, version and node ids are used). */
    service: Service | undefined;
}
/** The answer of Deregister; it has no fields. */
export interface DeregisterResponse {
}
/** The request of Watch. */
export interface WatchServicesRequest {
    /** Only this service; empty for all. */
    service: string;
}
/** One change of the registry. */
export interface ServiceEvent {
    /**
     * "create" (a node or record appeared), "update" (a node changed) or "delete"
     * (a node or record went away).
     */
    action: string;
    /** The record concerned; for "delete", the nodes that went away. */
    service: Service | undefined;
}
export declare const Service: MessageFns<Service>;
export declare const Service_MetadataEntry: MessageFns<Service_MetadataEntry>;
export declare const Node: MessageFns<Node>;
export declare const Node_MetadataEntry: MessageFns<Node_MetadataEntry>;
export declare const Endpoint: MessageFns<Endpoint>;
export declare const Endpoint_MetadataEntry: MessageFns<Endpoint_MetadataEntry>;
export declare const Type: MessageFns<Type>;
export declare const ListServicesRequest: MessageFns<ListServicesRequest>;
export declare const ListServicesResponse: MessageFns<ListServicesResponse>;
export declare const GetServiceRequest: MessageFns<GetServiceRequest>;
export declare const GetServiceResponse: MessageFns<GetServiceResponse>;
export declare const RegisterRequest: MessageFns<RegisterRequest>;
export declare const RegisterResponse: MessageFns<RegisterResponse>;
export declare const DeregisterRequest: MessageFns<DeregisterRequest>;
export declare const DeregisterResponse: MessageFns<DeregisterResponse>;
export declare const WatchServicesRequest: MessageFns<WatchServicesRequest>;
export declare const ServiceEvent: MessageFns<ServiceEvent>;
/** Discovery: list, look up, register, deregister and watch services. */
export type RegistryService = typeof RegistryService;
export declare const RegistryService: {
    /**
     * Every registered service, one record per name and version, with its nodes.
     * JSON: `POST /micro.v1.Registry/ListServices` with `{}` answers
     * `{"services":[...]}`.
     */
    readonly listServices: {
        readonly path: "/micro.v1.Registry/ListServices";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: ListServicesRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => ListServicesRequest;
        readonly responseSerialize: (value: ListServicesResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => ListServicesResponse;
    };
    /**
     * The records of one service (one per version). An unknown service is a 404
     * (gRPC NOT_FOUND) whose detail says which services exist.
     */
    readonly getService: {
        readonly path: "/micro.v1.Registry/GetService";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: GetServiceRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => GetServiceRequest;
        readonly responseSerialize: (value: GetServiceResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => GetServiceResponse;
    };
    /**
     * Registers (or renews) the nodes of a service record for `ttl_seconds`. A node
     * must be renewed before its TTL runs out or it is removed; renewing is calling
     * Register again with the same record.
     */
    readonly register: {
        readonly path: "/micro.v1.Registry/Register";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: RegisterRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => RegisterRequest;
        readonly responseSerialize: (value: RegisterResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => RegisterResponse;
    };
    /** Removes the nodes of a service record at once. */
    readonly deregister: {
        readonly path: "/micro.v1.Registry/Deregister";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: DeregisterRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => DeregisterRequest;
        readonly responseSerialize: (value: DeregisterResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => DeregisterResponse;
    };
    /**
     * A stream of changes: every node added, updated or removed, for one service or
     * all. The stream starts with the current state as `create` events.
     */
    readonly watch: {
        readonly path: "/micro.v1.Registry/Watch";
        readonly requestStream: false;
        readonly responseStream: true;
        readonly requestSerialize: (value: WatchServicesRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => WatchServicesRequest;
        readonly responseSerialize: (value: ServiceEvent) => Buffer;
        readonly responseDeserialize: (value: Buffer) => ServiceEvent;
    };
};
export interface RegistryServer extends UntypedServiceImplementation {
    /**
     * Every registered service, one record per name and version, with its nodes.
     * JSON: `POST /micro.v1.Registry/ListServices` with `{}` answers
     * `{"services":[...]}`.
     */
    listServices: handleUnaryCall<ListServicesRequest, ListServicesResponse>;
    /**
     * The records of one service (one per version). An unknown service is a 404
     * (gRPC NOT_FOUND) whose detail says which services exist.
     */
    getService: handleUnaryCall<GetServiceRequest, GetServiceResponse>;
    /**
     * Registers (or renews) the nodes of a service record for `ttl_seconds`. A node
     * must be renewed before its TTL runs out or it is removed; renewing is calling
     * Register again with the same record.
     */
    register: handleUnaryCall<RegisterRequest, RegisterResponse>;
    /** Removes the nodes of a service record at once. */
    deregister: handleUnaryCall<DeregisterRequest, DeregisterResponse>;
    /**
     * A stream of changes: every node added, updated or removed, for one service or
     * all. The stream starts with the current state as `create` events.
     */
    watch: handleServerStreamingCall<WatchServicesRequest, ServiceEvent>;
}
export interface RegistryClient extends Client {
    /**
     * Every registered service, one record per name and version, with its nodes.
     * JSON: `POST /micro.v1.Registry/ListServices` with `{}` answers
     * `{"services":[...]}`.
     */
    listServices(request: ListServicesRequest, callback: (error: ServiceError | null, response: ListServicesResponse) => void): ClientUnaryCall;
    listServices(request: ListServicesRequest, metadata: Metadata, callback: (error: ServiceError | null, response: ListServicesResponse) => void): ClientUnaryCall;
    listServices(request: ListServicesRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: ListServicesResponse) => void): ClientUnaryCall;
    /**
     * The records of one service (one per version). An unknown service is a 404
     * (gRPC NOT_FOUND) whose detail says which services exist.
     */
    getService(request: GetServiceRequest, callback: (error: ServiceError | null, response: GetServiceResponse) => void): ClientUnaryCall;
    getService(request: GetServiceRequest, metadata: Metadata, callback: (error: ServiceError | null, response: GetServiceResponse) => void): ClientUnaryCall;
    getService(request: GetServiceRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: GetServiceResponse) => void): ClientUnaryCall;
    /**
     * Registers (or renews) the nodes of a service record for `ttl_seconds`. A node
     * must be renewed before its TTL runs out or it is removed; renewing is calling
     * Register again with the same record.
     */
    register(request: RegisterRequest, callback: (error: ServiceError | null, response: RegisterResponse) => void): ClientUnaryCall;
    register(request: RegisterRequest, metadata: Metadata, callback: (error: ServiceError | null, response: RegisterResponse) => void): ClientUnaryCall;
    register(request: RegisterRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: RegisterResponse) => void): ClientUnaryCall;
    /** Removes the nodes of a service record at once. */
    deregister(request: DeregisterRequest, callback: (error: ServiceError | null, response: DeregisterResponse) => void): ClientUnaryCall;
    deregister(request: DeregisterRequest, metadata: Metadata, callback: (error: ServiceError | null, response: DeregisterResponse) => void): ClientUnaryCall;
    deregister(request: DeregisterRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: DeregisterResponse) => void): ClientUnaryCall;
    /**
     * A stream of changes: every node added, updated or removed, for one service or
     * all. The stream starts with the current state as `create` events.
     */
    watch(request: WatchServicesRequest, options?: Partial<CallOptions>): ClientReadableStream<ServiceEvent>;
    watch(request: WatchServicesRequest, metadata?: Metadata, options?: Partial<CallOptions>): ClientReadableStream<ServiceEvent>;
}
export declare const RegistryClient: {
    new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): RegistryClient;
    service: typeof RegistryService;
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
