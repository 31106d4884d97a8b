import type { IncomingMessage, ServerResponse } from "node:http";
import type { Route } from "./handler.js";
/** Largest request body accepted, as micro's default `--server_max_body` (4 MiB). */
export declare const MAX_BODY: number;
/** Counts what the node served, for `Debug.Stats`. */
export interface Counters {
    requests: number;
    errors: number;
}
/**
 * The request listener of a node serving `routes` for `service`.
 */
export declare function httpHandler(service: string, routes: ReadonlyMap<string, Route>, counters: Counters): (req: IncomingMessage, res: ServerResponse) => void;
