import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { type CallOptions, type ChannelCredentials, Client, type ClientOptions, type ClientReadableStream, type ClientUnaryCall, type handleServerStreamingCall, type handleUnaryCall, type Metadata, type ServiceError, type UntypedServiceImplementation } from "@grpc/grpc-js";
export declare const protobufPackage = "micro.v1";
export declare const protobufFileName = "micro/v1/broker.proto";
/**
 * The broker service of `micro server`: publish messages on topics and subscribe
 * to them, from any language. Behind it is the server's broker (`--broker`: the
 * default HTTP broker, or NATS), so messages published here reach micro services
 * subscribed to the topic, and messages micro services publish reach subscribers
 * here. Served by the proxy as gRPC and as JSON over HTTP
 * (`POST /micro.v1.Broker/Publish`); Subscribe streams as newline-delimited JSON,
 * or as server-sent events with `Accept: text/event-stream`.
 */
/** The request of Publish (also `Client.Publish`). */
export interface PublishRequest {
    /** The topic, e.g. "greeter.hello": no spaces or wildcards. */
    topic: string;
    /**
     * The message as JSON; sent with content type application/json. Set this or
     * `body`.
     */
    message: any | undefined;
    /**
     * The message as raw bytes, sent with `content_type` (default
     * application/protobuf). Set this or `message`.
     */
    body: Buffer;
    /** The content type of `body`. */
    contentType: string;
    /**
     * Extra headers of the message (lower-case keys). `micro-topic`, `micro-id` and
     * `content-type` are set by the broker.
     */
    headers: {
        [key: string]: string;
    };
}
export interface PublishRequest_HeadersEntry {
    key: string;
    value: string;
}
/** The answer of Publish. */
export interface PublishResponse {
    /** The id given to the message (its `micro-id` header). */
    id: string;
}
/** The request of Subscribe. */
export interface SubscribeRequest {
    /** The topic. */
    topic: string;
    /**
     * A queue group: messages are shared between the subscribers of the group
     * instead of each getting all. Empty: every message.
     */
    queue: string;
}
/** One message received. */
export interface Message {
    /** The topic it came on. */
    topic: string;
    /** The message id (`micro-id`). */
    id: string;
    /** All headers (lower-case keys). */
    headers: {
        [key: string]: string;
    };
    /** The message as JSON, when its content type is JSON. */
    message: any | undefined;
    /** The message as raw bytes, when it is not JSON. */
    body: Buffer;
}
export interface Message_HeadersEntry {
    key: string;
    value: string;
}
export declare const PublishRequest: MessageFns<PublishRequest>;
export declare const PublishRequest_HeadersEntry: MessageFns<PublishRequest_HeadersEntry>;
export declare const PublishResponse: MessageFns<PublishResponse>;
export declare const SubscribeRequest: MessageFns<SubscribeRequest>;
export declare const Message: MessageFns<Message>;
export declare const Message_HeadersEntry: MessageFns<Message_HeadersEntry>;
/** Publish and subscribe. */
export type BrokerService = typeof BrokerService;
export declare const BrokerService: {
    /** Publishes one message on a topic. */
    readonly publish: {
        readonly path: "/micro.v1.Broker/Publish";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: PublishRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => PublishRequest;
        readonly responseSerialize: (value: PublishResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => PublishResponse;
    };
    /**
     * Receives the messages of a topic while the stream is open. With a queue group,
     * each message goes to one subscriber of the group.
     */
    readonly subscribe: {
        readonly path: "/micro.v1.Broker/Subscribe";
        readonly requestStream: false;
        readonly responseStream: true;
        readonly requestSerialize: (value: SubscribeRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => SubscribeRequest;
        readonly responseSerialize: (value: Message) => Buffer;
        readonly responseDeserialize: (value: Buffer) => Message;
    };
};
export interface BrokerServer extends UntypedServiceImplementation {
    /** Publishes one message on a topic. */
    publish: handleUnaryCall<PublishRequest, PublishResponse>;
    /**
     * Receives the messages of a topic while the stream is open. With a queue group,
     * each message goes to one subscriber of the group.
     */
    subscribe: handleServerStreamingCall<SubscribeRequest, Message>;
}
export interface BrokerClient extends Client {
    /** Publishes one message on a topic. */
    publish(request: PublishRequest, callback: (error: ServiceError | null, response: PublishResponse) => void): ClientUnaryCall;
    publish(request: PublishRequest, metadata: Metadata, callback: (error: ServiceError | null, response: PublishResponse) => void): ClientUnaryCall;
    publish(request: PublishRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: PublishResponse) => void): ClientUnaryCall;
    /**
     * Receives the messages of a topic while the stream is open. With a queue group,
     * each message goes to one subscriber of the group.
     */
    subscribe(request: SubscribeRequest, options?: Partial<CallOptions>): ClientReadableStream<Message>;
    subscribe(request: SubscribeRequest, metadata?: Metadata, options?: Partial<CallOptions>): ClientReadableStream<Message>;
}
export declare const BrokerClient: {
    new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): BrokerClient;
    service: typeof BrokerService;
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
