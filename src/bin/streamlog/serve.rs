//! `streamlog serve`: the KurrentDB-compatible gRPC server over a store directory, until
//! SIGINT or SIGTERM; with `--node-id` and `--peer`, one node of a replicated cluster.
//! `streamlog cluster …`: membership changes and status of a running cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use streamlog::server::cluster::{AdminRequest, ClusterNode, ClusterTimings, parse_peer};
use streamlog::server::{
    ClusterSecret, DEFAULT_PORT, Server, ServerOptions, TlsIdentity, TlsRoots, Users,
};
use streamlog::{Durability, Options, Store};

use crate::{CliError, CliResult};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Store directory (created if needed).
    dir: PathBuf,
    /// Address to listen on (plain HTTP/2). Port 0 picks a free port; the start log line
    /// says which. Default: 127.0.0.1:2113, or in a cluster this node's --peer address.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Run as node N of a cluster (needs --peer): the raft log goes in DIR/raft/, the
    /// store in DIR/sm/store…/ (see docs/server.md, "Cluster mode").
    #[arg(long, value_name = "N", requires = "peer")]
    node_id: Option<u64>,
    /// A member of the cluster, this node included, as ID=HOST:PORT (repeat for each; the
    /// same list on every node). The address is where clients and the other nodes reach
    /// it. On the first start the lowest id initializes the cluster with all of them as
    /// voters.
    #[arg(long, value_name = "ID=HOST:PORT", requires = "node_id")]
    peer: Vec<String>,
    /// Largest gRPC message accepted, in bytes (at least 65536); also the most bytes of
    /// event data and metadata one append may carry.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20, value_parser = parse_message_bytes)]
    max_message_bytes: usize,
    /// Most concurrent calls per client connection.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_concurrent_streams: u32,
    /// Serve over TLS with this PEM certificate chain (needs --tls-key); clients connect
    /// with `tls=true`. In a cluster, the node then reaches its peers over TLS too and
    /// verifies their certificates (see --tls-ca), for the host of each --peer address.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// In a cluster served over TLS: the PEM certificates (e.g. the cluster's CA) the
    /// peers' certificates must lead to. Default: the certificates of --tls-cert (fits
    /// nodes sharing one certificate, or a chain that includes its CA). A peer whose
    /// certificate does not verify is refused.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Require basic authentication: a file of `name:argon2-hash` lines (make a hash with
    /// `streamlog hash-password`); clients connect with `esdb://name:password@host…`.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// In a cluster (--node-id): a file holding the secret the nodes share (one line of
    /// 16 to 1024 visible ASCII characters, e.g. `openssl rand -hex 32`); raft and
    /// administration calls must carry it. Required with --users.
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (off by default).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
    metrics_listen: Option<SocketAddr>,
    /// When an append is answered: `sync` (on disk first; the default), `periodic:DUR`
    /// (handed to the OS, synced every DUR: a whole number of ms, s, m or h, e.g.
    /// `periodic:100ms` or `periodic:1s`;
    /// `periodic` alone: every 100 ms. A machine crash may lose the last DUR of answered
    /// appends) or `buffered` (synced when the OS chooses, and at a clean stop). Not in a
    /// cluster, where raft decides.
    #[arg(long, value_name = "MODE", default_value = "sync", value_parser = parse_durability, conflicts_with = "node_id")]
    durability: Durability,
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
    let cluster = match args.node_id {
        Some(id) => Some(cluster_args(id, &args.peer)?),
        None => None,
    };
    // How the node reaches its peers: over TLS when it serves TLS (the nodes of a
    // cluster serve TLS all or none), trusting --tls-ca or else its own chain.
    let peer_tls = match (&args.tls_ca, &tls, &cluster) {
        (Some(_), _, None) => {
            return Err(CliError::Usage(
                "--tls-ca is for a node of a cluster (with --node-id): the CA its peers' \
                 certificates are verified against"
                    .into(),
            ));
        }
        (Some(_), None, Some(_)) => {
            return Err(CliError::Usage(
                "--tls-ca needs --tls-cert and --tls-key: a node reaches its peers over TLS \
                 only when it serves TLS itself"
                    .into(),
            ));
        }
        (Some(ca), Some(_), Some(_)) => Some(TlsRoots::from_pem_file(ca).map_err(usage)?),
        (None, Some(identity), Some(_)) => Some(identity.own_roots().map_err(usage)?),
        (None, _, _) => None,
    };
    let cluster_secret = match (&args.cluster_secret_file, &cluster) {
        (Some(path), Some(_)) => Some(ClusterSecret::from_file(path).map_err(usage)?),
        (Some(_), None) => {
            return Err(CliError::Usage(
                "--cluster-secret-file is for a node of a cluster (with --node-id)".into(),
            ));
        }
        (None, _) => None,
    };
    if cluster.is_some() && users.is_some() && cluster_secret.is_none() {
        return Err(CliError::Usage(
            "--users with --node-id needs --cluster-secret-file: the raft traffic between the \
             nodes is authenticated by the secret they share"
                .into(),
        ));
    }
    let listen = match (args.listen, &cluster) {
        (Some(l), _) => l,
        (None, Some((id, peers))) => {
            let addr = &peers[id];
            addr.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "cannot listen on the address of --peer {id}={addr}; give --listen"
                    ))
                })?
        }
        (None, None) => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
    };
    let mut options = ServerOptions::new(listen)
        .with_max_message_bytes(args.max_message_bytes)
        .with_max_append_bytes(args.max_message_bytes)
        .with_max_concurrent_streams(args.max_concurrent_streams);
    if let Some(tls) = tls {
        options = options.with_tls(tls);
    }
    if let Some(users) = users {
        options = options.with_users(users);
    }
    if let Some(secret) = &cluster_secret {
        options = options.with_cluster_secret(secret.clone());
    }
    if let Some(addr) = args.metrics_listen {
        options = options.with_metrics_listen(addr);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("streamlog-serve")
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the server's runtime: {e}")))?;
    // SIGINT and SIGTERM stop the server cleanly from here on, the store's open included
    // (a signal during it is acted on once the server runs).
    let signalled = {
        let _context = runtime.enter();
        stop_signal()
    };
    if let Some((id, peers)) = cluster {
        runtime.block_on(async {
            let node = ClusterNode::start(
                &args.dir,
                id,
                &peers,
                Options::default(),
                ClusterTimings::default(),
                cluster_secret,
                peer_tls,
            )
            .await?;
            let server = Server::bind_node(node.clone(), options).await?;
            // Stops on SIGINT/SIGTERM, or when raft stops on its own (logged by the node).
            let failure = Arc::new(parking_lot::Mutex::new(None));
            let stop = {
                let (node, failure) = (node.clone(), Arc::clone(&failure));
                async move {
                    tokio::select! {
                        () = signalled => {}
                        why = node.failed() => *failure.lock() = Some(why),
                    }
                }
            };
            let served = server.run(stop).await;
            let stopped = node.shutdown().await;
            served.and(stopped)?;
            match failure.lock().take() {
                Some(why) => Err(CliError::Other(format!(
                    "raft stopped on node {id}: {why} (see the raft_stopped log line)"
                ))),
                None => Ok(()),
            }
        })?;
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        return Ok(());
    }
    crate::refuse_cluster_node(&args.dir)?;
    crate::refuse_node_store(&args.dir)?;
    let store = Store::open_with(
        &args.dir,
        Options::default().with_durability(args.durability),
    )?;
    runtime.block_on(async {
        let server = Server::bind(store.clone(), options).await?;
        server.run(signalled).await
    })?;
    // The tasks and threads of subscriptions hold handles: end them before closing.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    store.close()?;
    Ok(())
}

/// `--durability`: `sync`, `buffered`, `periodic` (every 100 ms) or `periodic:DUR` with
/// DUR a whole number with a unit `ms`, `s`, `m` or `h` (1 ms to 1 hour).
fn parse_durability(s: &str) -> Result<Durability, String> {
    let bad = || {
        format!(
            "expected sync, buffered, periodic, or periodic:DURATION with a unit ms, s, m or h \
             (e.g. periodic:100ms, periodic:1m), not {s:?}"
        )
    };
    match s {
        "sync" => return Ok(Durability::Sync),
        "buffered" => return Ok(Durability::Buffered),
        // As `bench --durability periodic`.
        "periodic" => return Ok(Durability::Periodic(std::time::Duration::from_millis(100))),
        _ => {}
    }
    let every = s.strip_prefix("periodic:").ok_or_else(bad)?;
    const UNITS: [(&str, u64); 4] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)];
    let ms = crate::parse_with_unit(every, &UNITS).map_err(|_| bad())?;
    if !(1..=3_600_000).contains(&ms) {
        return Err(format!(
            "the periodic sync's interval must be 1 ms to 1 hour, not {every}"
        ));
    }
    Ok(Durability::Periodic(std::time::Duration::from_millis(ms)))
}

/// `--listen`, `--metrics-listen`: an IP address and port, or a host name that resolves
/// to one (its first address), as `--peer` takes.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{s} resolves to no address")),
        Err(e) => Err(format!("not HOST:PORT ({e})")),
    }
}

/// `--max-message-bytes`: a number of bytes the transport can honour (a gRPC message
/// below 64 KiB would refuse the protocol's own small messages).
fn parse_message_bytes(s: &str) -> Result<usize, String> {
    let bytes: usize = s
        .parse()
        .map_err(|e| format!("not a number of bytes: {e}"))?;
    if bytes < 64 << 10 {
        return Err(format!("at least 65536 bytes, not {bytes}"));
    }
    Ok(bytes)
}

/// Checks `--node-id` and `--peer`: every peer `ID=HOST:PORT`, ids and addresses unique,
/// the node's own id among them.
fn cluster_args(id: u64, peers: &[String]) -> CliResult<(u64, BTreeMap<u64, String>)> {
    let mut map = BTreeMap::new();
    let mut addresses = BTreeSet::new();
    for spec in peers {
        let (peer, addr) = parse_peer(spec).map_err(|e| CliError::Usage(e.to_string()))?;
        if !addresses.insert(addr.clone()) {
            return Err(CliError::Usage(format!(
                "--peer: address {addr} is given twice"
            )));
        }
        if map.insert(peer, addr).is_some() {
            return Err(CliError::Usage(format!(
                "--peer: node id {peer} is given twice"
            )));
        }
    }
    if !map.contains_key(&id) {
        return Err(CliError::Usage(format!(
            "--node-id {id} is not in the --peer list (which names every member, this node \
             included)"
        )));
    }
    Ok((id, map))
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print a node's view of the cluster (its role, term, log, the members and their
    /// roles) as one JSON object.
    Status {
        /// Connect over TLS, verifying the node's certificate against these PEM
        /// certificates (the cluster's CA, or the nodes' certificate).
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// The node's address.
        #[arg(value_name = "HOST:PORT")]
        node: String,
    },
    /// Add a node as a learner (non-voting; start it first with the same --peer list
    /// plus itself); the leader answers once the learner has caught up.
    AddLearner {
        /// The leader's address.
        #[arg(long, value_name = "HOST:PORT")]
        leader: String,
        /// The cluster's secret file (as the nodes' --cluster-secret-file), when it has one.
        #[arg(long, value_name = "FILE")]
        cluster_secret_file: Option<PathBuf>,
        /// Connect over TLS, verifying the leader's certificate against these PEM
        /// certificates (the cluster's CA, or the nodes' certificate).
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// The new node, as ID=HOST:PORT.
        #[arg(value_name = "ID=HOST:PORT")]
        node: String,
    },
    /// Make learners voters.
    Promote {
        /// The leader's address.
        #[arg(long, value_name = "HOST:PORT")]
        leader: String,
        /// The cluster's secret file (as the nodes' --cluster-secret-file), when it has one.
        #[arg(long, value_name = "FILE")]
        cluster_secret_file: Option<PathBuf>,
        /// Connect over TLS, verifying the leader's certificate against these PEM
        /// certificates (the cluster's CA, or the nodes' certificate).
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// The learners' node ids.
        #[arg(value_name = "ID", required = true)]
        ids: Vec<u64>,
    },
    /// Remove members (voters or learners) from the cluster.
    Remove {
        /// The leader's address.
        #[arg(long, value_name = "HOST:PORT")]
        leader: String,
        /// The cluster's secret file (as the nodes' --cluster-secret-file), when it has one.
        #[arg(long, value_name = "FILE")]
        cluster_secret_file: Option<PathBuf>,
        /// Connect over TLS, verifying the leader's certificate against these PEM
        /// certificates (the cluster's CA, or the nodes' certificate).
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// The members' node ids.
        #[arg(value_name = "ID", required = true)]
        ids: Vec<u64>,
    },
}

/// Runs a `streamlog cluster` command: one call to a node, its JSON answer on stdout.
pub fn cluster(command: ClusterCommand, out: &mut impl std::io::Write) -> CliResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start a runtime: {e}")))?;
    let secret = |file: Option<PathBuf>| -> streamlog::Result<Option<ClusterSecret>> {
        file.map(|f| ClusterSecret::from_file(&f)).transpose()
    };
    let roots = |file: Option<PathBuf>| -> streamlog::Result<Option<TlsRoots>> {
        file.map(|f| TlsRoots::from_pem_file(&f)).transpose()
    };
    let answer = runtime.block_on(async {
        let (leader, request, secret_file, tls_ca) = match command {
            ClusterCommand::Status { tls_ca, node } => {
                let tls = roots(tls_ca)?;
                return streamlog::server::cluster_status(&node, tls.as_ref()).await;
            }
            ClusterCommand::AddLearner {
                leader,
                cluster_secret_file,
                tls_ca,
                node,
            } => {
                let (id, address) = parse_peer(&node)?;
                let request = AdminRequest::AddLearner { id, address };
                (leader, request, cluster_secret_file, tls_ca)
            }
            ClusterCommand::Promote {
                leader,
                cluster_secret_file,
                tls_ca,
                ids,
            } => {
                let request = AdminRequest::Promote {
                    ids: ids.into_iter().collect(),
                };
                (leader, request, cluster_secret_file, tls_ca)
            }
            ClusterCommand::Remove {
                leader,
                cluster_secret_file,
                tls_ca,
                ids,
            } => {
                let request = AdminRequest::Remove {
                    ids: ids.into_iter().collect(),
                };
                (leader, request, cluster_secret_file, tls_ca)
            }
        };
        let secret = secret(secret_file)?;
        let tls = roots(tls_ca)?;
        streamlog::server::cluster_admin(&leader, &request, secret.as_ref(), tls.as_ref()).await
    });
    let answer = answer.map_err(|e| match e {
        streamlog::Error::InvalidArgument(m) => CliError::Usage(m),
        e => CliError::Store(e),
    })?;
    writeln!(out, "{answer}")?;
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
///
/// The handlers are installed by the call, not when the future is first polled: a signal
/// sent as soon as the start line is out (a supervisor, a test), or while the store
/// opens, stops the server cleanly rather than killing it. Call it inside the runtime's
/// context, before the store is opened.
fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        match handlers {
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
}
