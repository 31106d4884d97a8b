// The JSON values that cross the proxy in `google.protobuf.Value` fields.

/** Any JSON value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;

/** A JSON object: the proto3 JSON form of a message. */
export interface JsonObject {
  [key: string]: JsonValue;
}
