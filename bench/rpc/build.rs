//! Compiles the greeter's proto with tonic-prost-build for the tonic side of the
//! benchmark, with the vendored `protoc` unless `PROTOC` names another.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../examples/greeter/proto/greeter.proto";
    let include = "../../examples/greeter/proto";
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &[proto], &[include])?;
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
