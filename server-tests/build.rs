//! Compiles the protocol's `.proto` files (the workspace's `proto/`, the ones the server is
//! built from) into the client of [`lean`](src/lean.rs): the loopback benchmark's second
//! load generator. protox, as in the server's build, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../proto");
    let files = [
        "../proto/shared.proto",
        "../proto/status.proto",
        "../proto/streams.proto",
    ];
    let descriptors = protox::compile(files, ["../proto"])?;
    tonic_build::configure()
        .build_client(true)
        .build_server(false)
        .extern_path(".event_store.client.Empty", "()")
        .bytes([
            ".event_store.client.streams.AppendReq.ProposedMessage.data",
            ".event_store.client.streams.AppendReq.ProposedMessage.custom_metadata",
        ])
        .compile_fds(descriptors)?;
    Ok(())
}
