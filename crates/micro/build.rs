//! Generates the built-in protocols (`proto/micro/…`) with micro-build, and the
//! test-only Echo service used by the integration tests.
fn main() -> std::io::Result<()> {
    micro_build::configure()
        .micro_path("crate")
        .internal_service("micro.debug.v1.Debug")
        .compile(
            &[
                "../../proto/micro/debug/v1/debug.proto",
                "../../proto/micro/v1/client.proto",
                "../../proto/micro/v1/broker.proto",
                "../../proto/micro/v1/registry.proto",
                "../../proto/micro/v1/config.proto",
                "../../proto/grpc/health/v1/health.proto",
            ],
            &["../../proto"],
        )?;
    // Generated into OUT_DIR for tests/ only; the library does not include it.
    micro_build::compile_protos(&["tests/proto/echo.proto"], &["tests/proto"])
}
