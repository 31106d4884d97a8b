// @micro/client: the TypeScript client of micro, over `micro server`'s proxy.

export { Client, type CallOptions, type ClientOptions, type HealthStatus } from "./client.js";
export { DEFAULT_PROXY, proxyAddress, type ConnectionOptions } from "./connection.js";
export { Registry, type GetServiceOptions, type RegisterOptions, type WatchServicesOptions } from "./registry.js";
export { Config, type ConfigChange, type ConfigEntry, type WatchConfigOptions } from "./config.js";
export {
  Subscription,
  type BrokerMessage,
  type MessageHandler,
  type PublishOptions,
  type SubscribeOptions,
} from "./broker.js";
export { Service, PROTOCOL_HTTP_JSON, type ServiceOptions } from "./service.js";
export type { EndpointOptions, Handler, RequestContext, StreamHandler, TypeInfo } from "./handler.js";
export { MicroError, statusText, type MicroErrorJson } from "./errors.js";
export type { RequestOptions } from "./rpc.js";
export type { JsonObject, JsonValue } from "./json.js";
export type {
  Endpoint as ServiceEndpoint,
  Node as ServiceNode,
  Service as ServiceRecord,
  ServiceEvent,
  Type as MessageType,
} from "./gen/micro/v1/registry.js";
