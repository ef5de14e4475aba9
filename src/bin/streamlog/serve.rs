//! `streamlog serve`: the KurrentDB-compatible gRPC server over a store directory, until
//! SIGINT or SIGTERM.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use streamlog::Store;
use streamlog::server::{DEFAULT_PORT, Server, ServerOptions, TlsIdentity, Users};

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
    /// Serve over TLS with this PEM certificate chain (needs --tls-key); clients connect
    /// with `tls=true`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require basic authentication: a file of `name:argon2-hash` lines (make a hash with
    /// `streamlog hash-password`); clients connect with `esdb://name:password@host…`.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (off by default).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct HashPasswordArgs {}

/// Serves until SIGINT/SIGTERM, then finishes the calls in flight and closes the store.
pub fn run(args: ServeArgs) -> CliResult {
    // Bad TLS or users files are usage errors, found before the store is opened.
    let usage = |e: streamlog::Error| CliError::Usage(e.to_string());
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity::from_pem_files(cert, key).map_err(usage)?),
        (None, None) => None,
        _ => {
            return Err(CliError::Usage(
                "--tls-cert and --tls-key go together".into(),
            ));
        }
    };
    let users = match &args.users {
        Some(path) => Some(Users::from_file(path).map_err(usage)?),
        None => None,
    };
    let store = Store::open(&args.dir)?;
    let mut options = ServerOptions::new(args.listen)
        .with_max_message_bytes(args.max_message_bytes)
        .with_max_append_bytes(args.max_message_bytes)
        .with_max_concurrent_streams(args.max_concurrent_streams);
    if let Some(tls) = tls {
        options = options.with_tls(tls);
    }
    if let Some(users) = users {
        options = options.with_users(users);
    }
    if let Some(addr) = args.metrics_listen {
        options = options.with_metrics_listen(addr);
    }
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

/// Reads a password from the first line of standard input and prints its argon2id PHC
/// string, for a line `name:HASH` of a `--users` file.
pub fn hash_password(_args: HashPasswordArgs) -> CliResult {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(CliError::Usage(
            "hash-password reads the password from standard input; it was empty".into(),
        ));
    }
    let hash = streamlog::server::hash_password(password)?;
    println!("{hash}");
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
