// The JSON values that cross the proxy in `google.protobuf.Value` fields.
export {};
