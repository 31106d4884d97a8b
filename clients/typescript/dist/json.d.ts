/** Any JSON value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
/** A JSON object: the proto3 JSON form of a message. */
export interface JsonObject {
    [key: string]: JsonValue;
}
