// @micro/client: the TypeScript client of micro, over `micro server`'s proxy.
export { Client } from "./client.js";
export { DEFAULT_PROXY, proxyAddress } from "./connection.js";
export { Registry } from "./registry.js";
export { Config } from "./config.js";
export { Subscription, } from "./broker.js";
export { Service, PROTOCOL_HTTP_JSON } from "./service.js";
export { MicroError, statusText } from "./errors.js";
