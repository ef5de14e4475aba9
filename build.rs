//! Compiles the server's `.proto` files (feature `server`) with protox, a protobuf
//! compiler written in Rust, so that no system `protoc` is needed; tonic-build turns the
//! descriptors into the message types and service traits. Without the feature it does
//! nothing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "server")]
    compile_protos()?;
    Ok(())
}

#[cfg(feature = "server")]
fn compile_protos() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=proto");
    let files = [
        "proto/shared.proto",
        "proto/status.proto",
        "proto/streams.proto",
        "proto/serverfeatures.proto",
        "proto/gossip.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        // The protocol's own empty message is the unit type, as for google.protobuf.Empty.
        .extern_path(".event_store.client.Empty", "()")
        .bytes([
            ".event_store.client.streams.AppendReq.ProposedMessage.data",
            ".event_store.client.streams.AppendReq.ProposedMessage.custom_metadata",
            ".event_store.client.streams.BatchAppendReq.ProposedMessage.data",
            ".event_store.client.streams.BatchAppendReq.ProposedMessage.custom_metadata",
        ])
        .compile_fds(descriptors)?;
    // The raft service between the nodes of a cluster: its client is the nodes' network
    // and `streamlog cluster`.
    let descriptors = protox::compile(["proto/streamlog/raft.proto"], ["proto"])?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .bytes([".streamlog.raft"])
        .compile_fds(descriptors)?;
    Ok(())
}
