//! Compiles the protobuf schemas with a pure-Rust compiler (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/clock.proto",
        "proto/tunnel.proto",
        "proto/session.proto",
        "proto/agent.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // No `connect` helpers: they need tonic's transport, which only the
    // crates that dial enable.
    tonic_prost_build::configure()
        .bytes(".")
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
