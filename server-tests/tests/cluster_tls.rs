//! A cluster of `streamlog serve` processes on loopback whose nodes serve TLS: they reach
//! each other over TLS too, verifying each other's certificates against the cluster's CA
//! (`--tls-ca`, or without it their own certificate chain), so the raft traffic and the
//! cluster secret never cross in clear; a node given a CA that did not sign its peers'
//! certificates is refused at the handshake; a node whose serving and peer TLS disagree
//! is refused at bind.
//!
//! The certificates are made here with rcgen (no key committed): one CA, and one
//! certificate per node for 127.0.0.1 (the host of its `--peer` address) and `localhost`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kurrentdb::StreamState;
use kurrentdb::{AppendToStreamOptions, Client, ClientSettings, EventData, ReadStreamOptions};
use streamlog::server::TlsRoots;
use streamlog_server_tests::{Nodes, binary};

/// A CA able to sign node certificates.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// Its certificate as a PEM file.
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, issuer.pem()).expect("write the CA");
        Ca { issuer, pem }
    }

    /// A certificate for 127.0.0.1 and `localhost` and its key, as PEM files named
    /// after `name`.
    fn node_certificate(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("node key");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("node params");
        let certificate = params.signed_by(&key, &self.issuer).expect("sign");
        let paths = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&paths.0, certificate.pem()).expect("write the certificate");
        std::fs::write(&paths.1, key.serialize_pem()).expect("write the key");
        paths
    }
}

fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_owned()
}

/// `--tls-cert`, `--tls-key` (a certificate of its own from `signer`) and `--tls-ca` for
/// each node, `ca_of(id)` naming the CA file it trusts.
fn tls_args(
    dir: &Path,
    signer: &Ca,
    ca_of: impl Fn(u64) -> PathBuf,
) -> impl Fn(u64) -> Vec<String> {
    let certificates: Vec<(PathBuf, PathBuf)> = (1..=3)
        .map(|id| signer.node_certificate(dir, &format!("node{id}")))
        .collect();
    move |id| {
        let (cert, key) = &certificates[id as usize - 1];
        vec![
            "--tls-cert".to_owned(),
            path(cert),
            "--tls-key".to_owned(),
            path(key),
            "--tls-ca".to_owned(),
            path(&ca_of(id)),
        ]
    }
}

/// The status of the node at `addr` over TLS, verified against `roots`.
async fn status(addr: &str, roots: &TlsRoots) -> serde_json::Value {
    tokio::time::timeout(
        Duration::from_secs(5),
        streamlog::server::cluster_status(addr, Some(roots)),
    )
    .await
    .expect("a status in time")
    .expect("a status over TLS")
}

/// Three nodes with certificates of their own from one CA elect a leader over TLS,
/// replicate a client's append (the official client over TLS, checking the CA) to every
/// node, and answer `streamlog cluster status --tls-ca`; a status call without TLS, or
/// with a CA that did not sign them, or over TLS to a plain node, is refused with a
/// reason that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serving_tls_replicate_over_tls_and_serve_clients() {
    let root = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(root.path(), "cluster-ca");
    let args = tls_args(root.path(), &ca, |_| ca.pem.clone());
    let roots = TlsRoots::from_pem_file(&ca.pem).expect("the CA as trust roots");
    let cluster = Nodes::cluster_with_node_args(root.path(), 3, args, Some(roots.clone()));
    let (leader, elected) = cluster
        .wait_leader(None, Duration::from_secs(20))
        .await
        .expect("a leader: the nodes reach each other over TLS");
    eprintln!("leader elected over TLS after {elected:?}");
    let addr = cluster.nodes[leader].addr.clone();

    let settings: ClientSettings = format!("esdb://{addr}?tls=true&tlsCaFile={}", ca.pem.display())
        .parse()
        .expect("connection string");
    let client = Client::new(settings).expect("client");
    let r = client
        .append_to_stream(
            "over-tls",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            EventData::binary("Tick", b"1".to_vec().into()),
        )
        .await
        .expect("an append to the leader over TLS");
    assert_eq!(r.next_expected_version, 0);

    // Every node holds it, read from its own store over TLS.
    for node in &cluster.nodes {
        let settings: ClientSettings = format!(
            "esdb://{}?tls=true&tlsCaFile={}&nodePreference=follower",
            node.addr,
            ca.pem.display()
        )
        .parse()
        .expect("connection string");
        let reader = Client::new(settings).expect("client");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let read = match reader
                .read_stream("over-tls", &ReadStreamOptions::default())
                .await
            {
                Ok(mut s) => s
                    .next()
                    .await
                    .map(|e| e.map(|e| e.get_original_event().revision)),
                Err(e) => Err(e),
            };
            if matches!(read, Ok(Some(0))) {
                break;
            }
            assert!(Instant::now() < deadline, "node {}: {read:?}", node.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = status(&node.addr, &roots).await;
        assert!(
            s["last_applied"].as_u64() >= Some(2),
            "node {}: {s}",
            node.id
        );
    }

    // The administration command verifies the node as the nodes do.
    let out = std::process::Command::new(binary())
        .args(["cluster", "status", "--tls-ca", &path(&ca.pem), &addr])
        .output()
        .expect("run streamlog cluster status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["state"], "Leader", "{answer}");

    // Plain HTTP/2 to a TLS node gets nowhere, and says TLS may be why.
    let plain = streamlog::server::cluster_status(&addr, None)
        .await
        .expect_err("a status call without TLS");
    assert!(plain.to_string().contains("--tls-ca"), "{plain}");
    // A CA that did not sign the node's certificate: refused at the handshake.
    let other = Ca::new(root.path(), "other-ca");
    let other_roots = TlsRoots::from_pem_file(&other.pem).expect("roots");
    let refused = streamlog::server::cluster_status(&addr, Some(&other_roots))
        .await
        .expect_err("a status call that does not verify the node");
    assert!(
        refused.to_string().contains("invalid peer certificate"),
        "{refused}"
    );

    // TLS to a node that serves plain HTTP/2: said so.
    let plain_root = tempfile::tempdir().expect("tempdir");
    let plain_node = Nodes::single(plain_root.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    let not_tls = loop {
        let e = streamlog::server::cluster_status(&plain_node.nodes[0].addr, Some(&roots))
            .await
            .expect_err("a TLS call to a plain node");
        // Until the node listens, the connection is refused.
        if !e.to_string().contains("refused") || Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        not_tls.to_string().contains("does not seem to speak TLS"),
        "{not_tls}"
    );
}

/// Node 1 (the lowest id, which initializes the cluster and asks for the first votes) is
/// given a CA that did not sign its peers' certificates: its raft calls are refused at
/// the handshake (it logs why; its peers log the TLS alert it sent), so no vote reaches
/// them, no leader is elected, and its peers never receive a log entry. With the
/// certificates not verified, node 1 would be elected within a second or two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_trusting_another_ca_is_refused_at_the_handshake_and_never_joins() {
    let root = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(root.path(), "cluster-ca");
    let other = Ca::new(root.path(), "other-ca");
    let args = tls_args(root.path(), &ca, |id| {
        if id == 1 {
            other.pem.clone()
        } else {
            ca.pem.clone()
        }
    });
    let roots = TlsRoots::from_pem_file(&ca.pem).expect("the CA as trust roots");
    let cluster = Nodes::cluster_with_node_args(root.path(), 3, args, Some(roots.clone()));

    // Node 1 tried both peers and refused their certificates.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log =
            std::fs::read_to_string(cluster.nodes[0].dir.with_extension("log")).unwrap_or_default();
        let refused = |peer: u64| {
            log.lines().any(|l| {
                l.contains(r#""event":"raft_peer_failed""#)
                    && l.contains(&format!(r#""peer":{peer}"#))
                    && l.contains("UnknownIssuer")
            })
        };
        if refused(2) && refused(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 logged no refusal:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several election timeouts (500 to 1000 ms) later, still nobody leads and the
    // peers have not a single entry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cluster.leader(None).await, None, "a leader was elected");
    for node in &cluster.nodes[1..] {
        let s = status(&node.addr, &roots).await;
        assert!(s["last_log_index"].is_null(), "node {}: {s}", node.id);
        assert!(s["current_leader"].is_null(), "node {}: {s}", node.id);
        let log = std::fs::read_to_string(node.dir.with_extension("log")).unwrap_or_default();
        assert!(
            log.lines()
                .any(|l| l.contains(r#""event":"tls_handshake""#) && l.contains("UnknownCA")),
            "node {} saw no refused handshake:\n{log}",
            node.id
        );
    }
}

/// Without `--tls-ca`, a node trusts its own certificate chain: three nodes sharing one
/// self-signed certificate (not a CA's) for 127.0.0.1 elect a leader over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_one_certificate_trust_it_without_a_ca_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let certificate =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed certificate");
    let (cert, key_file) = (
        root.path().join("shared.pem"),
        root.path().join("shared.key"),
    );
    std::fs::write(&cert, certificate.pem()).expect("write the certificate");
    std::fs::write(&key_file, key.serialize_pem()).expect("write the key");
    let args = ["--tls-cert", &path(&cert), "--tls-key", &path(&key_file)].map(str::to_owned);
    let roots = TlsRoots::from_pem_file(&cert).expect("the certificate as trust root");
    let cluster =
        Nodes::cluster_with_node_args(root.path(), 3, |_| args.to_vec(), Some(roots.clone()));
    let (leader, _) = cluster
        .wait_leader(None, Duration::from_secs(20))
        .await
        .expect("a leader: the nodes verify each other against their shared certificate");
    let s = status(&cluster.nodes[leader].addr, &roots).await;
    let members = s["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{s}");
}

/// A node whose serving and peer TLS disagree could not talk to its peers:
/// `Server::bind_node` refuses it, either way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_node_refuses_a_node_whose_serving_and_peer_tls_disagree() {
    use streamlog::server::cluster::{ClusterNode, ClusterTimings};
    use streamlog::server::{Server, ServerOptions, TlsIdentity};
    let root = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(root.path(), "ca");
    let (cert, key) = ca.node_certificate(root.path(), "node");
    let identity = TlsIdentity::from_pem_files(&cert, &key).expect("identity");
    let roots = TlsRoots::from_pem_file(&ca.pem).expect("roots");
    let peers = [(1, "127.0.0.1:1".to_owned())].into_iter().collect();
    let listen = "127.0.0.1:0".parse().expect("address");
    for (i, (serves_tls, peer_tls)) in [(true, false), (false, true)].into_iter().enumerate() {
        let node = ClusterNode::start(
            &root.path().join(format!("node{i}")),
            1,
            &peers,
            streamlog::Options::default(),
            ClusterTimings::default(),
            None,
            peer_tls.then(|| roots.clone()),
        )
        .await
        .expect("start the node");
        let mut options = ServerOptions::new(listen);
        if serves_tls {
            options = options.with_tls(identity.clone());
        }
        match Server::bind_node(node.clone(), options).await {
            Err(streamlog::Error::InvalidArgument(m)) => assert!(m.contains("TLS"), "{m}"),
            other => panic!("serves TLS {serves_tls}, peers over TLS {peer_tls}: {other:?}"),
        }
        node.shutdown().await.expect("stop the node");
    }
}

/// Trust roots that cannot be read, hold no certificate, or hold one that does not
/// parse are refused with the file named, never taken as fewer roots; a node
/// certificate's own chain makes roots.
#[test]
fn bad_tls_ca_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.node_certificate(dir.path(), "node");
    let refused = |file: &Path| match TlsRoots::from_pem_file(file) {
        Err(streamlog::Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    let missing = dir.path().join("missing.pem");
    assert!(refused(&missing).contains("missing.pem"));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    assert!(refused(&empty).contains("no certificate"));
    // A key is no certificate.
    assert!(refused(&key).contains("no certificate"));
    // A CERTIFICATE block whose bytes are no certificate.
    let damaged = dir.path().join("damaged.pem");
    std::fs::write(
        &damaged,
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let m = refused(&damaged);
    assert!(
        m.contains("certificate 1") && m.contains("damaged.pem"),
        "{m}"
    );
    // The CA file and a node's chain are accepted.
    TlsRoots::from_pem_file(&ca.pem).expect("the CA");
    let identity = streamlog::server::TlsIdentity::from_pem_files(&cert, &key).expect("identity");
    identity.own_roots().expect("the node's own chain");
}
