// Pure functions, without servers: the error mapping and durations.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { MicroError, proxyAddress, statusText } from "@micro/client";
import { fromGrpcError, httpCodeOfGrpc } from "../dist/errors.js";
import { parseDuration } from "../dist/duration.js";

describe("errors", () => {
  test("gRPC statuses map back to HTTP codes as docs/wire.md says", () => {
    const table: Array<[number, number]> = [
      [status.CANCELLED, 499], [status.UNKNOWN, 500], [status.INVALID_ARGUMENT, 400],
      [status.DEADLINE_EXCEEDED, 408], [status.NOT_FOUND, 404], [status.ALREADY_EXISTS, 409],
      [status.PERMISSION_DENIED, 403], [status.RESOURCE_EXHAUSTED, 429], [status.FAILED_PRECONDITION, 412],
      [status.ABORTED, 409], [status.OUT_OF_RANGE, 400], [status.UNIMPLEMENTED, 501],
      [status.INTERNAL, 500], [status.UNAVAILABLE, 503], [status.DATA_LOSS, 500],
      [status.UNAUTHENTICATED, 401], [99, 500],
    ];
    for (const [grpc, http] of table) assert.equal(httpCodeOfGrpc(grpc), http, `gRPC ${grpc}`);
  });

  function grpcError(code: number, details: string, trailer?: string) {
    const metadata = new Metadata();
    if (trailer !== undefined) metadata.set("micro-error", trailer);
    return Object.assign(new Error(details), { code, details, metadata });
  }

  test("the micro-error trailer wins over the status", () => {
    const trailer = '{"id":"greeter","code":413,"detail":"too big","status":"Payload Too Large"}';
    const err = fromGrpcError(grpcError(status.RESOURCE_EXHAUSTED, "too big", trailer));
    assert.deepEqual(err.toJSON(), { id: "greeter", code: 413, detail: "too big", status: "Payload Too Large" });
  });

  test("without the trailer, or with a broken one, the status is mapped", () => {
    const err = fromGrpcError(grpcError(status.NOT_FOUND, "no such thing", "not json"));
    assert.deepEqual(err.toJSON(), { id: "micro.client", code: 404, detail: "no such thing", status: "Not Found" });
    const late = fromGrpcError(grpcError(status.DEADLINE_EXCEEDED, "Deadline exceeded"), "greeter Greeter.Hello");
    assert.equal(late.code, 408);
    assert.equal(late.detail, "greeter Greeter.Hello did not answer in time");
  });

  test("MicroError keeps codes within 400-599 and serialises to the shared shape", () => {
    assert.equal(new MicroError("x", 200, "odd").code, 500);
    assert.equal(JSON.stringify(MicroError.notFound("svc", "gone")), '{"id":"svc","code":404,"detail":"gone","status":"Not Found"}');
    assert.equal(MicroError.parse("[1]"), undefined);
    assert.equal(statusText(499), "Client Closed Request");
  });
});

describe("options", () => {
  test("durations: plain seconds or units", () => {
    assert.equal(parseDuration("30"), 30_000);
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("1m30s"), 90_000);
    assert.equal(parseDuration("2h"), 7_200_000);
    assert.equal(parseDuration("soon"), undefined);
    assert.equal(parseDuration(""), undefined);
  });

  test("the proxy address: option, else MICRO_PROXY, else localhost:8081", () => {
    const saved = process.env["MICRO_PROXY"];
    try {
      process.env["MICRO_PROXY"] = "10.0.0.1:9000";
      assert.equal(proxyAddress("127.0.0.1:1234"), "127.0.0.1:1234");
      assert.equal(proxyAddress(), "10.0.0.1:9000");
      delete process.env["MICRO_PROXY"];
      assert.equal(proxyAddress(), "localhost:8081");
      assert.equal(proxyAddress("http://127.0.0.1:8081/"), "127.0.0.1:8081");
    } finally {
      if (saved === undefined) delete process.env["MICRO_PROXY"];
      else process.env["MICRO_PROXY"] = saved;
    }
  });
});
