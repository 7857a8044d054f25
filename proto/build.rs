//! Compiles the protobuf schemas with a pure-Rust compiler (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/tunnel.proto", "proto/session.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
