//! `streamlog serve`'s operations side, driven by the official KurrentDB Rust client:
//! TLS (a certificate chain made here with rcgen, checked by the client against its CA
//! file, or not checked), basic authentication from a users file, and the Prometheus
//! `/metrics` endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kurrentdb::{AppendToStreamOptions, Client, ClientSettings, EventData, ReadStreamOptions};
use kurrentdb::{StreamPosition, StreamState, SubscribeToStreamOptions};
use streamlog::Store;
use streamlog::server::{Server, ServerOptions, TlsIdentity, Users, hash_password};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(20);

struct Running {
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<streamlog::Result<()>>,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn serve(options: impl FnOnce(ServerOptions) -> ServerOptions) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("open");
    let options = options(ServerOptions::new("127.0.0.1:0".parse().unwrap()));
    let server = Server::bind(store.clone(), options).await.expect("bind");
    let (addr, metrics) = (server.local_addr(), server.metrics_addr());
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        metrics,
        stop,
        task,
        store,
        _dir: dir,
    }
}

impl Running {
    async fn shut_down(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the server stops in time")
            .expect("the server task")
            .expect("the server ends cleanly");
        self.store.close().expect("close the store");
    }

    fn client(&self, connection: &str) -> Client {
        let settings: ClientSettings = connection
            .replace("ADDR", &self.addr.to_string())
            .parse()
            .expect("connection string");
        Client::new(settings).expect("client")
    }
}

fn event(n: u64) -> EventData {
    EventData::json("Noted", &serde_json::json!({ "n": n })).expect("json event")
}

async fn count_events(client: &Client, stream: &str) -> kurrentdb::Result<usize> {
    let mut read = client
        .read_stream(stream, &ReadStreamOptions::default())
        .await?;
    let mut n = 0;
    while read.next().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1, as PEM files:
/// (CA certificate, server certificate chain, server key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "streamlog test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
    let server = server_params
        .signed_by(&server_key, &ca)
        .expect("server certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write CA");
    std::fs::write(&paths.1, server.pem()).expect("write certificate");
    std::fs::write(&paths.2, server_key.serialize_pem()).expect("write key");
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_append_and_subscribe_over_tls() {
    let files = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(files.path());
    let identity = TlsIdentity::from_pem_files(&cert, &key).expect("TLS identity");
    let server = serve(|o| o.with_tls(identity)).await;

    // The client checks the server's certificate against the CA.
    let verified = server.client(&format!("esdb://ADDR?tls=true&tlsCaFile={}", ca.display()));
    let r = verified
        .append_to_stream(
            "secure-1",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            vec![event(0), event(1)],
        )
        .await
        .expect("append over TLS, certificate checked");
    assert_eq!(r.next_expected_version, 1);
    assert_eq!(count_events(&verified, "secure-1").await.expect("read"), 2);

    // A subscription lives on the same TLS connection.
    let mut sub = verified
        .subscribe_to_stream(
            "secure-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    for want in 0..2 {
        let e = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .expect("an event in time")
            .expect("event");
        assert_eq!(e.get_original_event().revision, want);
    }

    // And one that does not check it.
    let unchecked = server.client("esdb://ADDR?tls=true&tlsVerifyCert=false");
    unchecked
        .append_to_stream("secure-1", &AppendToStreamOptions::default(), event(2))
        .await
        .expect("append over TLS, certificate not checked");
    let e = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("the live event in time")
        .expect("event");
    assert_eq!(e.get_original_event().revision, 2);

    // Plain HTTP/2 to a TLS port gets nowhere.
    let plain = server.client("esdb://ADDR?tls=false&maxDiscoverAttempts=1");
    let attempt = tokio::time::timeout(
        Duration::from_secs(10),
        plain.append_to_stream("secure-1", &AppendToStreamOptions::default(), event(3)),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "a plain client must not append to a TLS server"
    );
    assert_eq!(count_events(&verified, "secure-1").await.expect("read"), 3);
    server.shut_down().await;
}

#[test]
fn bad_tls_files_are_refused_with_the_reason() {
    let files = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(files.path());
    let garbage = files.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let missing = files.path().join("missing.pem");
    let refused = |cert: &Path, key: &Path| match TlsIdentity::from_pem_files(cert, key) {
        Err(streamlog::Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert!(refused(&missing, &key).contains("missing.pem"));
    assert!(refused(&garbage, &key).contains("no certificate"));
    assert!(refused(&cert, &garbage).contains("private key"));
    // A key that is not the certificate's: the CA's certificate with the server's key.
    let other_key = rcgen::KeyPair::generate().expect("key");
    let wrong_key = files.path().join("wrong.key");
    std::fs::write(&wrong_key, other_key.serialize_pem()).expect("write");
    refused(&cert, &wrong_key);
    refused(&ca, &key);
    TlsIdentity::from_pem_files(&cert, &key).expect("the right pair is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_known_users_with_their_password_get_in() {
    let users = Users::parse(&format!(
        "# test users\nadmin:{}\nops:{}\n",
        hash_password("changeit").expect("hash"),
        hash_password("s3cret-2").expect("hash"),
    ))
    .expect("users");
    let server = serve(|o| o.with_users(users)).await;

    let admin = server.client("esdb://admin:changeit@ADDR?tls=false");
    admin
        .append_to_stream("guarded", &AppendToStreamOptions::default(), event(0))
        .await
        .expect("the right password appends");
    // Again: from the cache of verified credentials this time.
    admin
        .append_to_stream("guarded", &AppendToStreamOptions::default(), event(1))
        .await
        .expect("the right password appends again");
    let ops = server.client("esdb://ops:s3cret-2@ADDR?tls=false");
    assert_eq!(count_events(&ops, "guarded").await.expect("ops reads"), 2);

    for connection in [
        "esdb://admin:wrong@ADDR?tls=false",
        "esdb://nobody:changeit@ADDR?tls=false",
        "esdb://ADDR?tls=false",
    ] {
        let client = server.client(connection);
        match client
            .append_to_stream("guarded", &AppendToStreamOptions::default(), event(9))
            .await
        {
            Err(kurrentdb::Error::AccessDenied) => {}
            other => panic!("{connection}: expected access denied, got {other:?}"),
        }
        match count_events(&client, "guarded").await {
            Err(kurrentdb::Error::AccessDenied) => {}
            other => panic!("{connection}: expected access denied on read, got {other:?}"),
        }
    }
    assert_eq!(
        count_events(&admin, "guarded").await.expect("read"),
        2,
        "refused appends wrote nothing"
    );
    server.shut_down().await;
}

/// `GET /metrics` over plain HTTP/1.1: the body.
pub(crate) async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("openmetrics-text"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the sample `name` (no labels) in a scrape.
pub(crate) fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (n, v) = line.split_once(' ')?;
            (n == name).then(|| v.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_appends_syncs_subscriptions_and_connections() {
    let server = serve(|o| o.with_metrics_listen("127.0.0.1:0".parse().unwrap())).await;
    let metrics = server.metrics.expect("a metrics address");
    let before = scrape(metrics).await;
    assert_eq!(sample(&before, "streamlog_appends_total"), 0.0);
    assert_eq!(sample(&before, "streamlog_connections_active"), 0.0);

    let client = server.client("esdb://ADDR?tls=false");
    let data = serde_json::json!({ "n": 1 }).to_string();
    client
        .append_to_stream(
            "measured",
            &AppendToStreamOptions::default(),
            vec![event(1), event(2), event(3)],
        )
        .await
        .expect("append");
    client
        .append_to_stream("measured", &AppendToStreamOptions::default(), event(4))
        .await
        .expect("append");
    let mut sub = client
        .subscribe_to_stream(
            "measured",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    sub.next().await.expect("a subscribed event");

    let after = scrape(metrics).await;
    assert_eq!(sample(&after, "streamlog_appends_total"), 2.0);
    assert_eq!(sample(&after, "streamlog_events_appended_total"), 4.0);
    let bytes = sample(&after, "streamlog_bytes_appended_total");
    assert!(
        bytes >= 4.0 * data.len() as f64,
        "{bytes} bytes for four events of {} bytes",
        data.len()
    );
    assert_eq!(sample(&after, "streamlog_subscriptions_active"), 1.0);
    assert!(sample(&after, "streamlog_connections_active") >= 1.0);
    assert!(sample(&after, "streamlog_connections_accepted_total") >= 1.0);
    // Each durable append waited for a sync.
    let syncs = sample(&after, "streamlog_fsync_duration_seconds_count");
    assert!(syncs >= 2.0, "{syncs} syncs after two durable appends");
    assert_eq!(
        sample(
            &after,
            "streamlog_fsync_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        syncs
    );
    assert!(sample(&after, "streamlog_fsync_duration_seconds_sum") > 0.0);

    drop(sub);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = scrape(metrics).await;
        if sample(&now, "streamlog_subscriptions_active") == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription is still counted after the client dropped it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shut_down().await;
}
