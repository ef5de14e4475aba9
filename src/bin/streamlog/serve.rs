//! `streamlog serve`: the KurrentDB-compatible gRPC server over a store directory, until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use streamlog::Store;
use streamlog::server::{DEFAULT_PORT, Server, ServerOptions};

use crate::{CliError, CliResult};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Store directory (created if needed).
    dir: PathBuf,
    /// Address to listen on (plain HTTP/2). Port 0 picks a free port; the start log line
    /// says which.
    #[arg(long, value_name = "HOST:PORT", default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    listen: SocketAddr,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    max_message_bytes: usize,
    /// Most concurrent calls per client connection.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_concurrent_streams: u32,
}

/// Serves until SIGINT/SIGTERM, then finishes the calls in flight and closes the store.
pub fn run(args: ServeArgs) -> CliResult {
    let store = Store::open(&args.dir)?;
    let options = ServerOptions::new(args.listen)
        .with_max_message_bytes(args.max_message_bytes)
        .with_max_append_bytes(args.max_message_bytes)
        .with_max_concurrent_streams(args.max_concurrent_streams);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("streamlog-serve")
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the server's runtime: {e}")))?;
    runtime.block_on(async {
        let server = Server::bind(store.clone(), options).await?;
        server.run(stop_signal()).await
    })?;
    // The tasks and threads of subscriptions hold handles: end them before closing.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    store.close()?;
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        // Without signal handlers, Ctrl-C through tokio's portable path still stops it.
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
