//! What the tests (`tests/`) and benchmarks (`benches/`) of `streamlog serve` share: the
//! `streamlog` binary of the same build, and [`Nodes`], `streamlog serve` processes on
//! loopback, one single node or the members of a cluster, to start, kill, pause and ask
//! for their leader; [`serve_in_process`], the server on a free loopback port of the
//! calling process; and [`lean::LeanClient`], the loopback benchmark's second load
//! generator.

pub mod lean;

/// The task serving a store in process ([`serve_in_process`]).
pub type Served = tokio::task::JoinHandle<streamlog::Result<()>>;

/// Serves `store` with default options on a free loopback port, in a task of the current
/// tokio runtime: the address, the sender that stops the server, and the serving task.
///
/// # Panics
/// When the server cannot bind.
pub async fn serve_in_process(
    store: &streamlog::Store,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    Served,
) {
    let server = streamlog::server::Server::bind(
        store.clone(),
        streamlog::server::ServerOptions::new("127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("bind");
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (addr, stop, served)
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `streamlog` binary: `STREAMLOG_BIN`, else the one beside the running test or
/// benchmark (`target/<profile>/deps/<this> -> target/<profile>/streamlog`).
///
/// # Panics
/// When that binary is missing (it is built by `cargo build --release`, or by
/// `cargo test --release` at the workspace root).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("STREAMLOG_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("streamlog"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release` first (`cargo test --release` at the \
         workspace root builds it too), or set STREAMLOG_BIN",
        bin.display()
    );
    bin
}

/// A loopback port free at the time of the call.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One `streamlog serve` process.
#[derive(Debug)]
pub struct Node {
    /// Its node id (1, 2, … in a cluster; 1 for a single node).
    pub id: u64,
    /// The address it listens on (and, in a cluster, its peer address).
    pub addr: String,
    /// Its directory; its standard error goes to `<dir>.log`.
    pub dir: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    /// Whether it runs (started and not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is paused (SIGSTOP).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The last `lines` lines of its standard error, newest first.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
        log.lines().rev().take(lines).collect::<Vec<_>>().join("\n")
    }
}

/// `streamlog serve` processes on loopback, all started at once: a single node, or the
/// members of a cluster (every one given the whole peer list). Dropping it kills them
/// (paused ones resumed first); when a thread panics, their logs' last lines are printed.
#[derive(Debug)]
pub struct Nodes {
    /// The processes, in id order.
    pub nodes: Vec<Node>,
    /// `ID=HOST:PORT` of every member; empty for a single node.
    peers: Vec<String>,
    /// More arguments for each node's `streamlog serve`, in id order.
    args: Vec<Vec<String>>,
    /// The roots the nodes' certificates are verified against when they serve TLS (for
    /// [`Nodes::leader`]'s status calls).
    tls: Option<streamlog::server::TlsRoots>,
}

impl Nodes {
    /// Starts a single node in `root/node1`.
    pub fn single(root: &Path) -> Nodes {
        Nodes::start(root, 1, false, |_| Vec::new(), None)
    }

    /// Starts the `count` members of a cluster in `root/node1`, `root/node2`, ….
    pub fn cluster(root: &Path, count: usize) -> Nodes {
        Nodes::start(root, count, true, |_| Vec::new(), None)
    }

    /// As [`Nodes::cluster`], every node given `args` too (`--users FILE`, …).
    pub fn cluster_with_args(root: &Path, count: usize, args: &[&str]) -> Nodes {
        let args: Vec<String> = args.iter().map(ToString::to_string).collect();
        Nodes::start(root, count, true, |_| args.clone(), None)
    }

    /// As [`Nodes::cluster`], node `id` given `args(id)` too (its own certificate, …);
    /// with `tls`, the nodes serve TLS and [`Nodes::leader`] verifies their certificates
    /// against those roots.
    pub fn cluster_with_node_args(
        root: &Path,
        count: usize,
        args: impl Fn(u64) -> Vec<String>,
        tls: Option<streamlog::server::TlsRoots>,
    ) -> Nodes {
        Nodes::start(root, count, true, args, tls)
    }

    fn start(
        root: &Path,
        count: usize,
        cluster: bool,
        args: impl Fn(u64) -> Vec<String>,
        tls: Option<streamlog::server::TlsRoots>,
    ) -> Nodes {
        let nodes: Vec<Node> = (1..=count as u64)
            .map(|id| Node {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                dir: root.join(format!("node{id}")),
                child: None,
                paused: false,
            })
            .collect();
        let peers = if cluster {
            nodes
                .iter()
                .map(|n| format!("{}={}", n.id, n.addr))
                .collect()
        } else {
            Vec::new()
        };
        let args = nodes.iter().map(|n| args(n.id)).collect();
        let mut started = Nodes {
            nodes,
            peers,
            args,
            tls,
        };
        for i in 0..count {
            started.launch(i);
        }
        started
    }

    /// Starts node `i` (again): `streamlog serve DIR --listen ADDR` for a single node,
    /// `streamlog serve DIR --node-id ID --peer …` for a member.
    ///
    /// # Panics
    /// When its directory or log file cannot be made or the process cannot start.
    pub fn launch(&mut self, i: usize) {
        let node = &self.nodes[i];
        std::fs::create_dir_all(&node.dir).expect("node dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.with_extension("log"))
            .expect("log file");
        let mut cmd = Command::new(binary());
        cmd.arg("serve").arg(&node.dir);
        if self.peers.is_empty() {
            cmd.args(["--listen", &node.addr]);
        } else {
            cmd.args(["--node-id", &node.id.to_string()]);
            for p in &self.peers {
                cmd.args(["--peer", p]);
            }
        }
        cmd.args(&self.args[i]);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start streamlog serve");
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
    }

    /// Sends `signal` (as `kill` takes it: `-STOP`, `-CONT`, …) to node `i`.
    ///
    /// # Panics
    /// When node `i` is not running or `kill` fails.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Kills node `i` with SIGKILL and waits for it; nothing if it is not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    /// Waits up to `bound` for node `i` to exit on its own: its exit status, or `None`
    /// while it still runs (or was not started).
    pub fn wait_exit(&mut self, i: usize, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + bound;
        loop {
            let child = self.nodes[i].child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes[i].child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pauses node `i` (SIGSTOP).
    ///
    /// # Panics
    /// As [`Nodes::signal`].
    pub fn pause(&mut self, i: usize) {
        self.signal(i, "-STOP");
        self.nodes[i].paused = true;
    }

    /// Resumes node `i` (SIGCONT).
    ///
    /// # Panics
    /// As [`Nodes::signal`].
    pub fn resume(&mut self, i: usize) {
        self.signal(i, "-CONT");
        self.nodes[i].paused = false;
    }

    /// Every node's address, comma-separated (for a connection string).
    pub fn addresses(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the node that reports itself leader (`streamlog cluster status`),
    /// asking the running, unpaused nodes other than `except`; a single node leads.
    pub async fn leader(&self, except: Option<usize>) -> Option<usize> {
        if self.peers.is_empty() {
            return Some(0);
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if Some(i) == except || !n.is_running() || n.paused {
                continue;
            }
            let status = tokio::time::timeout(
                Duration::from_secs(1),
                streamlog::server::cluster_status(&n.addr, self.tls.as_ref()),
            )
            .await;
            if let Ok(Ok(s)) = status
                && s["state"] == "Leader"
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits up to `bound` for a leader other than `except`: its index and how long it
    /// took.
    pub async fn wait_leader(
        &self,
        except: Option<usize>,
        bound: Duration,
    ) -> Option<(usize, Duration)> {
        let start = Instant::now();
        while start.elapsed() < bound {
            if let Some(i) = self.leader(except).await {
                return Some((i, start.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!(
                    "--- node {} log (last lines, newest first):\n{}",
                    n.id,
                    n.log_tail(20)
                );
            }
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                if n.paused {
                    let _ = Command::new("kill")
                        .args(["-CONT", &c.id().to_string()])
                        .status();
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
