//! A 3-node cluster of `streamlog serve` processes on loopback, written to continuously by
//! the official KurrentDB Rust client with expected versions and idempotent retries (the
//! same event ids on every retry), while the leader is killed with SIGKILL and restarted,
//! or paused with SIGSTOP and resumed, again and again.
//!
//! Writers connect to one node each (no discovery): followers answer "not leader" with
//! the leader's address and the client reconnects there; a writer whose node does not
//! answer moves to the next. A client given all nodes finds the leader by gossip at the
//! end.
//!
//! Checked at the end: every acknowledged append is on every node at its acknowledged
//! version, no event id twice, versions gap-free, the three nodes hold the same events
//! in the same order (stream, version, id; positions may differ, docs/design.md), a new
//! leader after each fault within [`ELECTION_BOUND`], and the clients' history keeps the
//! concurrency contract (acknowledged appends with exact expected versions form one chain
//! per stream: no version acknowledged twice).
//!
//! Short by default (four faults); `STREAMLOG_CLUSTER_SOAK_SECS=600` runs faults for that
//! long. Figures (faults, election and failover times) are printed at the end.
//!
//! Needs the `streamlog` binary of the same build: `cargo test --release` at the workspace
//! root builds it (or set `STREAMLOG_BIN`); the processes are started by this crate's
//! `Nodes` (src/lib.rs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, DeleteStreamOptions, EventData, ReadAllOptions,
    ReadStreamOptions, StreamMetadata, StreamMetadataResult, StreamPosition, StreamState,
    TombstoneStreamOptions,
};
use streamlog_server_tests::Nodes;

/// A new leader must be elected within this long after a fault.
const ELECTION_BOUND: Duration = Duration::from_secs(15);
/// Writers on a stream of their own each.
const SOLO_WRITERS: usize = 4;
/// Writers racing on one shared stream.
const SHARED_WRITERS: usize = 2;
const SHARED_STREAM: &str = "shared";

/// One acknowledged append: stream, version, event id.
type Ack = (String, u64, uuid::Uuid);

#[derive(Default)]
struct History {
    acks: Vec<Ack>,
    /// When each successful append was sent and when it returned.
    successes: Vec<(Instant, Instant)>,
    /// Contract violations seen by the writers.
    violations: Vec<String>,
    retries: u64,
    /// The latest failures (for a failure's report).
    errors: Vec<String>,
}

fn event_id(writer: usize, attempt: u64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(writer as u64 + 1, attempt)
}

/// A client of the node at `address` (no discovery): a follower answers its writes with
/// "not leader" and the leader's address, and the client reconnects there.
fn client(address: &str) -> Client {
    let settings: ClientSettings = format!("esdb://{address}?tls=false")
        .parse()
        .expect("connection string");
    Client::new(settings).expect("client")
}

/// A client of all the nodes, finding the leader through their gossip.
fn discovering_client(addresses: &str) -> Client {
    let settings: ClientSettings = format!(
        "esdb://{addresses}?tls=false&maxDiscoverAttempts=20&discoveryInterval=100&gossipTimeout=1000"
    )
    .parse()
    .expect("connection string");
    Client::new(settings).expect("client")
}

/// A writer appending one event at a time with exact expected versions. Any failure other
/// than a conflict is retried with the same event id and expected version; a conflict on
/// a stream of its own is a violation (a retry of a stored append answers its original
/// result), on the shared stream the writer moves to the version it was told.
async fn writer(
    w: usize,
    addresses: Vec<String>,
    stream: String,
    shared: bool,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
) {
    let mut node = w % addresses.len();
    let mut client = client(&addresses[node]);
    let mut failures_in_a_row = 0u32;
    let mut next_version: u64 = 0;
    let mut attempt: u64 = 0;
    let mut pending_retry = false;
    while !stop.load(Ordering::Relaxed) || pending_retry {
        let id = event_id(w, attempt);
        let state = match next_version {
            0 => StreamState::NoStream,
            v => StreamState::StreamRevision(v - 1),
        };
        let options = AppendToStreamOptions::default()
            .stream_state(state)
            .deadline(Duration::from_secs(3));
        let event = EventData::binary("Tick", format!("{w}/{attempt}").into_bytes().into()).id(id);
        let sent = Instant::now();
        // The client's deadline goes to the server only: a paused node would hold the
        // call until HTTP/2 keep-alive gives up (about 20 s), so it is bounded here too.
        let outcome = match tokio::time::timeout(
            Duration::from_secs(3),
            client.append_to_stream(stream.as_str(), &options, event),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(kurrentdb::Error::DeadlineExceeded),
        };
        match outcome {
            Ok(r) => {
                failures_in_a_row = 0;
                let mut h = history.lock().unwrap();
                if r.next_expected_version != next_version {
                    h.violations.push(format!(
                        "{stream}: append at {next_version} acknowledged as {}",
                        r.next_expected_version
                    ));
                }
                h.acks.push((stream.clone(), next_version, id));
                h.successes.push((sent, Instant::now()));
                next_version += 1;
                attempt += 1;
                pending_retry = false;
            }
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                if shared {
                    next_version = match current {
                        kurrentdb::CurrentRevision::Current(v) => v + 1,
                        kurrentdb::CurrentRevision::NoStream => 0,
                    };
                    attempt += 1;
                    pending_retry = false;
                } else {
                    history.lock().unwrap().violations.push(format!(
                        "{stream}: the retry of the append at {next_version} was refused: \
                         the stream is at {current:?}"
                    ));
                    return;
                }
            }
            Err(e) => {
                // Unknown outcome: retry the same append (same id, same expected version).
                // The client reconnects by itself on "not leader" (to the leader named)
                // but not when a node does not answer (killed, paused): after two
                // failures in a row, a new client of the next node.
                {
                    let mut h = history.lock().unwrap();
                    h.retries += 1;
                    h.errors.push(format!("writer {w}: {e}"));
                    if h.errors.len() > 30 {
                        h.errors.remove(0);
                    }
                }
                failures_in_a_row += 1;
                if failures_in_a_row >= 2 && !matches!(e, kurrentdb::Error::NotLeaderException(_)) {
                    node = (node + 1) % addresses.len();
                    client = self::client(&addresses[node]);
                    failures_in_a_row = 0;
                }
                if stop.load(Ordering::Relaxed) && shared {
                    return;
                }
                pending_retry = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Every event on the node at `addr`, in `$all` order, read from its own store
/// (no leader required).
async fn events_of(addr: &str) -> Vec<Ack> {
    let settings: ClientSettings = format!("esdb://{addr}?tls=false&nodePreference=follower")
        .parse()
        .expect("connection string");
    let client = Client::new(settings).expect("client");
    let options = ReadAllOptions::default()
        .forwards()
        .position(StreamPosition::Start)
        .max_count(usize::MAX);
    let mut out = Vec::new();
    let mut stream = client.read_all(&options).await.expect("read $all");
    while let Some(e) = stream.next().await.expect("read $all") {
        let e = e.get_original_event();
        out.push((e.stream_id().to_owned(), e.revision, e.id));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_keep_every_acknowledged_append_through_kills_and_pauses_of_the_leader() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = Nodes::cluster(root.path(), 3);
    let soak = std::env::var("STREAMLOG_CLUSTER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (first, t) = cluster
        .wait_leader(None, Duration::from_secs(30))
        .await
        .expect("a first leader");
    eprintln!(
        "first leader: node {} after {:?}",
        cluster.nodes[first].id, t
    );

    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(History::default()));
    let mut writers = Vec::new();
    for w in 0..SOLO_WRITERS + SHARED_WRITERS {
        let shared = w >= SOLO_WRITERS;
        let stream = if shared {
            SHARED_STREAM.to_owned()
        } else {
            format!("solo-{w}")
        };
        writers.push(tokio::spawn(writer(
            w,
            cluster.nodes.iter().map(|n| n.addr.clone()).collect(),
            stream,
            shared,
            Arc::clone(&stop),
            Arc::clone(&history),
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Faults on the leader: SIGKILL then restart, SIGSTOP then SIGCONT, in turn.
    let started = Instant::now();
    let mut faults = 0usize;
    let mut elections = Vec::new();
    let mut failovers = Vec::new();
    loop {
        let more = match soak {
            Some(d) => started.elapsed() < d,
            None => faults < 4,
        };
        if !more {
            break;
        }
        let Some((leader, _)) = cluster.wait_leader(None, ELECTION_BOUND).await else {
            panic!("no leader {ELECTION_BOUND:?} before fault {faults}");
        };
        let kill = faults.is_multiple_of(2);
        let at = Instant::now();
        if kill {
            cluster.kill(leader);
        } else {
            cluster.pause(leader);
        }
        faults += 1;
        let (next, took) = cluster
            .wait_leader(Some(leader), ELECTION_BOUND)
            .await
            .unwrap_or_else(|| {
                panic!("no new leader within {ELECTION_BOUND:?} after fault {faults}")
            });
        assert_ne!(next, leader);
        elections.push(took);
        // The first append sent after the fault and acknowledged.
        let deadline = Instant::now() + Duration::from_secs(20);
        let failover = loop {
            let first_after = history
                .lock()
                .unwrap()
                .successes
                .iter()
                .filter(|(sent, _)| *sent > at)
                .map(|(_, done)| *done)
                .min();
            if let Some(t) = first_after {
                break t - at;
            }
            if Instant::now() >= deadline {
                let mut views = Vec::new();
                for n in &cluster.nodes {
                    let v = tokio::time::timeout(
                        Duration::from_secs(1),
                        streamlog::server::cluster_status(&n.addr, None),
                    )
                    .await;
                    views.push(format!("node {} (paused {}): {v:?}", n.id, n.is_paused()));
                }
                let (retries, errors) = {
                    let h = history.lock().unwrap();
                    (h.retries, h.errors.join("\n"))
                };
                panic!(
                    "no append succeeded within 20 s of fault {faults}; retries {retries}; \
                     latest errors:\n{errors}\nnodes:\n{}",
                    views.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        failovers.push(failover);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if kill {
            cluster.launch(leader);
        } else {
            cluster.resume(leader);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    // Let the writers run on the healed cluster, then stop them (retries finish).
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("writers finish their retries")
            .expect("writer task");
    }
    let mut history = std::mem::take(&mut *history.lock().unwrap());

    // A client given every node finds the leader through gossip and appends.
    let discovering = discovering_client(&cluster.addresses());
    let id = uuid::Uuid::from_u64_pair(u64::MAX, 0);
    let options = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let event = EventData::binary("Found", b"leader".to_vec().into()).id(id);
        match discovering
            .append_to_stream("discovered", &options, event)
            .await
        {
            Ok(r) => {
                assert_eq!(r.next_expected_version, 0);
                history.acks.push(("discovered".to_owned(), 0, id));
                break;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "a discovering client cannot append: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(
        history.violations.is_empty(),
        "violations: {:?}",
        history.violations
    );
    assert!(
        history.acks.len() > 50,
        "only {} appends acknowledged",
        history.acks.len()
    );

    // All nodes converge: poll until their `$all` agree.
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = loop {
        let mut all = Vec::new();
        for n in &cluster.nodes {
            all.push(events_of(&n.addr).await);
        }
        if all.iter().all(|e| *e == all[0]) {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not converge: {:?} events",
            all.iter().map(Vec::len).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let events = &all[0];

    // No id twice, versions gap-free per stream.
    let mut ids = HashSet::new();
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut at: HashMap<(&str, u64), uuid::Uuid> = HashMap::new();
    for (stream, version, id) in events {
        assert!(ids.insert(*id), "event {id} twice");
        let next = versions.entry(stream.as_str()).or_insert(0);
        assert_eq!(
            *version, *next,
            "{stream}: version {version} after {next} events"
        );
        *next += 1;
        at.insert((stream.as_str(), *version), *id);
    }
    // Every acknowledged append is there at its acknowledged version; no version was
    // acknowledged twice (one chain per stream).
    let mut acked: BTreeMap<(&str, u64), uuid::Uuid> = BTreeMap::new();
    for (stream, version, id) in &history.acks {
        if let Some(other) = acked.insert((stream.as_str(), *version), *id) {
            panic!("{stream}@{version} acknowledged to {other} and to {id}");
        }
        assert_eq!(
            at.get(&(stream.as_str(), *version)),
            Some(id),
            "acknowledged {stream}@{version} ({id}) is not on the nodes"
        );
    }

    let ms = |d: &Duration| d.as_millis();
    let mut e: Vec<u128> = elections.iter().map(ms).collect();
    let mut f: Vec<u128> = failovers.iter().map(ms).collect();
    e.sort_unstable();
    f.sort_unstable();
    eprintln!(
        "faults {faults} ({} SIGKILL, {} SIGSTOP) in {:?}; acknowledged appends {}, \
         retries {}, events {}; election ms {:?}; failover (fault -> first acknowledged \
         append) ms {:?}",
        faults.div_ceil(2),
        faults / 2,
        started.elapsed(),
        history.acks.len(),
        history.retries,
        events.len(),
        e,
        f
    );
}

/// Retries a client call while the cluster is between leaders or the client is moving to
/// the leader (not-leader answers, unavailable nodes), for up to 20 s; any other outcome
/// is returned.
macro_rules! on_leader {
    ($call:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match $call.await {
                Err(
                    e @ (kurrentdb::Error::NotLeaderException(_)
                    | kurrentdb::Error::ServerError(_)
                    | kurrentdb::Error::GrpcConnectionError(_)
                    | kurrentdb::Error::ConnectionClosed
                    | kurrentdb::Error::DeadlineExceeded),
                ) if Instant::now() < deadline => {
                    eprintln!("retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        }
    }};
}

/// Deletes, tombstones and stream metadata through the official client against a
/// cluster: a follower sends the client to the leader, the leader answers as a single
/// node does (conflicts, "stream deleted" after a tombstone), and every node holds the
/// same records afterwards, read from its own store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_tombstones_and_metadata_are_replicated_to_every_node() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = Nodes::cluster(root.path(), 3);
    let (leader, _) = cluster
        .wait_leader(None, Duration::from_secs(30))
        .await
        .expect("a leader");
    // The followers learn the leader with its first heartbeat.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let follower = (leader + 1) % cluster.nodes.len();
    let client = client(&cluster.nodes[follower].addr);

    let first = client
        .delete_stream("soft", &DeleteStreamOptions::default())
        .await
        .expect_err("a follower does not delete");
    assert!(
        matches!(first, kurrentdb::Error::NotLeaderException(_)),
        "a follower answers a delete with not-leader: {first:?}"
    );
    for stream in ["soft", "hard", "meta"] {
        for n in 0..3u64 {
            let state = match n {
                0 => StreamState::NoStream,
                n => StreamState::StreamRevision(n - 1),
            };
            let event = EventData::binary("Tick", n.to_string().into_bytes().into());
            on_leader!(client.append_to_stream(
                stream,
                &AppendToStreamOptions::default().stream_state(state),
                event.clone()
            ))
            .expect("append");
        }
    }

    let conflict = on_leader!(client.delete_stream(
        "soft",
        &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(7))
    ))
    .expect_err("a delete at a wrong revision");
    assert!(
        !matches!(conflict, kurrentdb::Error::ResourceDeleted),
        "a conflict, not a deleted stream: {conflict:?}"
    );
    let at = on_leader!(client.delete_stream(
        "soft",
        &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(2))
    ))
    .expect("soft delete");
    assert!(at.is_some(), "a delete reports its position");
    on_leader!(client.tombstone_stream(
        "hard",
        &TombstoneStreamOptions::default().stream_state(StreamState::StreamRevision(2))
    ))
    .expect("tombstone");
    let deleted = on_leader!(client.append_to_stream(
        "hard",
        &AppendToStreamOptions::default(),
        EventData::binary("Tick", b"late".to_vec().into())
    ))
    .expect_err("an append to a tombstoned stream");
    assert!(
        matches!(deleted, kurrentdb::Error::ResourceDeleted),
        "{deleted:?}"
    );
    let metadata = StreamMetadata::builder()
        .max_count(1)
        .insert_custom_property("owner", "ops")
        .build();
    let written = on_leader!(client.set_stream_metadata(
        "meta",
        &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
        &metadata
    ))
    .expect("metadata");
    assert_eq!(written.next_expected_version, 0);
    let stale = on_leader!(client.set_stream_metadata(
        "meta",
        &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
        &metadata
    ))
    .expect_err("metadata at a stale revision");
    assert!(
        matches!(stale, kurrentdb::Error::WrongExpectedVersion { .. }),
        "{stale:?}"
    );

    // Every node, read from its own store (no leader required).
    for node in &cluster.nodes {
        let settings: ClientSettings =
            format!("esdb://{}?tls=false&nodePreference=follower", node.addr)
                .parse()
                .expect("connection string");
        let reader = Client::new(settings).expect("client");
        let options = ReadStreamOptions::default().requires_leader(false);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let hard = match reader.read_stream("hard", &options).await {
                Ok(mut s) => s.next().await.map(|_| ()),
                Err(e) => Err(e),
            };
            let soft = match reader.read_stream("soft", &options).await {
                Ok(mut s) => s.next().await.map(|e| e.is_none()),
                Err(e) => Err(e),
            };
            let meta = reader.get_stream_metadata("meta", &options).await;
            let applied = matches!(hard, Err(kurrentdb::Error::ResourceDeleted))
                && matches!(soft, Ok(true) | Err(kurrentdb::Error::ResourceNotFound))
                && matches!(&meta, Ok(StreamMetadataResult::Success(m)) if m.metadata() == &metadata);
            if applied {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: hard {hard:?}, soft {soft:?}, meta {meta:?}",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = Vec::new();
        for n in &cluster.nodes {
            all.push(events_of(&n.addr).await);
        }
        if all.iter().all(|e| *e == all[0]) {
            // The three changes are records of the system stream, the same on each node.
            let changes = all[0]
                .iter()
                .filter(|(s, _, _)| s == "$streams-metadata")
                .count();
            assert_eq!(changes, 3, "{:?}", all[0]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not converge: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With `--users` and `--cluster-secret-file`, clients authenticate as on a single node
/// and the nodes' raft traffic with the shared secret: the cluster elects a leader and
/// replicates an authenticated client's append to every node; clients without
/// credentials, and administration calls without the secret (or with another one), are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_users_the_nodes_authenticate_with_the_cluster_secret() {
    let root = tempfile::tempdir().expect("tempdir");
    let users = root.path().join("users");
    let hash = streamlog::server::hash_password("s3cret").expect("hash");
    std::fs::write(&users, format!("ops:{hash}\n")).expect("users file");
    let secret = root.path().join("cluster-secret");
    std::fs::write(&secret, "f3b1c0de5eed0123456789abcdef4242\n").expect("secret file");
    let args = [
        "--users",
        users.to_str().expect("path"),
        "--cluster-secret-file",
        secret.to_str().expect("path"),
    ];
    let cluster = Nodes::cluster_with_args(root.path(), 3, &args);
    let (leader, _) = cluster
        .wait_leader(None, Duration::from_secs(30))
        .await
        .expect("a leader: the nodes' raft calls carry the secret");
    let addr = &cluster.nodes[leader].addr;

    let settings: ClientSettings = format!("esdb://ops:s3cret@{addr}?tls=false")
        .parse()
        .expect("connection string");
    let ops = Client::new(settings).expect("client");
    let event = EventData::binary("Tick", b"1".to_vec().into());
    on_leader!(ops.append_to_stream(
        "secured",
        &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
        event.clone()
    ))
    .expect("an authenticated append");
    let anonymous = client(addr)
        .append_to_stream("secured", &AppendToStreamOptions::default(), event.clone())
        .await
        .expect_err("an append without credentials");
    assert!(
        matches!(anonymous, kurrentdb::Error::AccessDenied),
        "{anonymous:?}"
    );
    let settings: ClientSettings = format!("esdb://ops:wrong@{addr}?tls=false")
        .parse()
        .expect("connection string");
    let wrong = Client::new(settings)
        .expect("client")
        .append_to_stream("secured", &AppendToStreamOptions::default(), event)
        .await
        .expect_err("an append with a wrong password");
    assert!(matches!(wrong, kurrentdb::Error::AccessDenied), "{wrong:?}");

    // Administration needs the secret: none, or another one, is refused before the
    // request is looked at; the right one reaches the leader (which refuses to promote a
    // node that is not a learner).
    let promote = streamlog::server::cluster::AdminRequest::Promote {
        ids: [99].into_iter().collect(),
    };
    let other = streamlog::server::ClusterSecret::new("another-secret-0123456789").expect("secret");
    for presented in [None, Some(&other)] {
        let refused = streamlog::server::cluster_admin(addr, &promote, presented, None)
            .await
            .expect_err("administration without the cluster's secret");
        assert!(refused.to_string().contains("secret"), "{refused}");
    }
    let right = streamlog::server::ClusterSecret::from_file(&secret).expect("secret");
    let answer = streamlog::server::cluster_admin(addr, &promote, Some(&right), None).await;
    assert!(
        answer
            .as_ref()
            .is_err_and(|e| !e.to_string().contains("secret")),
        "{answer:?}"
    );

    // The append reached every node through raft calls that carried the secret.
    for node in &cluster.nodes {
        let settings: ClientSettings = format!(
            "esdb://ops:s3cret@{}?tls=false&nodePreference=follower",
            node.addr
        )
        .parse()
        .expect("connection string");
        let reader = Client::new(settings).expect("client");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let read = match reader
                .read_stream("secured", &ReadStreamOptions::default())
                .await
            {
                Ok(mut s) => s.next().await.map(|e| e.is_some()),
                Err(e) => Err(e),
            };
            if matches!(read, Ok(true)) {
                break;
            }
            assert!(Instant::now() < deadline, "node {}: {read:?}", node.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A member whose directory was wiped is refused at its start (the leader replicated
/// entries to it that it no longer has) instead of running on as a member that lost what
/// it acknowledged; once removed from the cluster, it starts on its empty directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_directory_is_refused_until_removed() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = Nodes::cluster(root.path(), 3);
    let (leader, _) = cluster
        .wait_leader(None, Duration::from_secs(30))
        .await
        .expect("a leader");
    let client = client(&cluster.nodes[leader].addr);
    for n in 0..5u64 {
        let event = EventData::binary("Tick", n.to_string().into_bytes().into());
        client
            .append_to_stream("s", &AppendToStreamOptions::default(), event)
            .await
            .expect("append");
    }
    let wiped = (leader + 1) % cluster.nodes.len();
    let wiped_id = cluster.nodes[wiped].id;
    // The leader has replicated to it (its matched index is known).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = streamlog::server::cluster_status(&cluster.nodes[leader].addr, None)
            .await
            .expect("status");
        if status["replication"][wiped_id.to_string()].is_u64() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replication to node {wiped_id}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kill(wiped);
    std::fs::remove_dir_all(&cluster.nodes[wiped].dir).expect("wipe");
    cluster.launch(wiped);
    let exit = cluster
        .wait_exit(wiped, Duration::from_secs(20))
        .expect("the wiped node is refused");
    assert!(!exit.success(), "{exit:?}");
    let log = cluster.nodes[wiped].log_tail(5);
    assert!(log.contains("lost its data"), "{log}");

    let remove = streamlog::server::cluster::AdminRequest::Remove {
        ids: [wiped_id].into_iter().collect(),
    };
    streamlog::server::cluster_admin(&cluster.nodes[leader].addr, &remove, None, None)
        .await
        .expect("remove the wiped node");
    std::fs::remove_dir_all(&cluster.nodes[wiped].dir).expect("wipe");
    cluster.launch(wiped);
    assert!(
        cluster.wait_exit(wiped, Duration::from_secs(3)).is_none(),
        "a removed node starts on an empty directory: {}",
        cluster.nodes[wiped].log_tail(5)
    );
}

/// On a cluster node the sync histogram counts the raft log's syncs, which make its
/// appends durable (its store is written without syncs of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_sync_metric_counts_its_raft_log_syncs() {
    let root = tempfile::tempdir().expect("tempdir");
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("addr");
    let listen = metrics.to_string();
    let cluster = Nodes::cluster_with_args(root.path(), 1, &["--metrics-listen", &listen]);
    let (leader, _) = cluster
        .wait_leader(None, Duration::from_secs(30))
        .await
        .expect("a leader");
    let client = client(&cluster.nodes[leader].addr);
    let before = crate::secure::sample(
        &crate::secure::scrape(metrics).await,
        "streamlog_fsync_duration_seconds_count",
    );
    for n in 0..3u64 {
        let event = EventData::binary("Tick", n.to_string().into_bytes().into());
        client
            .append_to_stream("s", &AppendToStreamOptions::default(), event)
            .await
            .expect("append");
    }
    let after = crate::secure::sample(
        &crate::secure::scrape(metrics).await,
        "streamlog_fsync_duration_seconds_count",
    );
    assert!(
        after - before >= 3.0,
        "{} syncs for three appends, one after another",
        after - before
    );
}
