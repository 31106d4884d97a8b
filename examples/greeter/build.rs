fn main() -> std::io::Result<()> {
    micro_build::compile_protos(&["proto/greeter.proto"], &["proto"])
}
