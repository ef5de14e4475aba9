//! `streamlog`'s gRPC server driven by the official KurrentDB Rust client (crate
//! `kurrentdb`), a client we did not write: appends with each expected-revision kind,
//! batches, reads both ways, `$all`, catch-up then live subscriptions with filters, soft
//! and hard deletes with the errors clients expect after them, and a subscription that
//! lives through a server restart.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kurrentdb::{
    AppendToStreamOptions, BatchAppendOptions, Client, ClientSettings, CurrentRevision, EventData,
    Position, ReadAllOptions, ReadStreamOptions, RetryOptions, StreamPosition, StreamState,
    SubscribeToAllOptions, SubscribeToStreamOptions, SubscriptionEvent, SubscriptionFilter,
};
use kurrentdb::{DeleteStreamOptions, TombstoneStreamOptions};
use streamlog::Store;
use streamlog::server::{Server, ServerOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for anything the server should do at once.
const PATIENCE: Duration = Duration::from_secs(20);

/// A server on a store directory, run in this process.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<streamlog::Result<()>>,
    store: Store,
}

/// Opens the store (waiting for a previous server's handles to go) and serves it.
async fn serve(dir: &Path, addr: SocketAddr) -> Running {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let store = loop {
        match Store::open(dir) {
            Ok(s) => break s,
            Err(streamlog::Error::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("open the store: {e}"),
        }
    };
    let server = Server::bind(store.clone(), ServerOptions::new(addr))
        .await
        .expect("bind");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop,
        task,
        store,
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

    fn client(&self) -> Client {
        let settings: ClientSettings = format!("esdb://{}?tls=false", self.addr)
            .parse()
            .expect("connection string");
        Client::new(settings).expect("client")
    }
}

async fn start() -> (tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = serve(&dir.path().join("store"), "127.0.0.1:0".parse().unwrap()).await;
    (dir, running)
}

fn json(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, &serde_json::json!({ "n": n })).expect("json event")
}

fn expect(state: StreamState) -> AppendToStreamOptions {
    AppendToStreamOptions::default().stream_state(state)
}

async fn read_stream(
    client: &Client,
    stream: &str,
    options: &ReadStreamOptions,
) -> Vec<(u64, String, u64)> {
    let mut read = client.read_stream(stream, options).await.expect("read");
    let mut out = Vec::new();
    while let Some(e) = read.next().await.expect("next") {
        let e = e.get_original_event();
        let n = e.as_json::<serde_json::Value>().expect("json")["n"]
            .as_u64()
            .expect("n");
        out.push((e.revision, e.event_type.clone(), n));
    }
    out
}

async fn read_all(client: &Client, options: &ReadAllOptions) -> Vec<(String, u64, Position)> {
    let mut read = client.read_all(options).await.expect("read $all");
    let mut out = Vec::new();
    while let Some(e) = read.next().await.expect("next") {
        let e = e.get_original_event();
        out.push((e.stream_id().to_owned(), e.revision, e.position));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_honour_each_expected_revision_kind() {
    let (_dir, server) = start().await;
    let client = server.client();

    let r = client
        .append_to_stream("order-1", &expect(StreamState::NoStream), json("Placed", 0))
        .await
        .expect("no_stream on a new stream");
    assert_eq!(r.next_expected_version, 0);

    match client
        .append_to_stream("order-1", &expect(StreamState::NoStream), json("Placed", 1))
        .await
    {
        Err(kurrentdb::Error::WrongExpectedVersion { expected, current }) => {
            assert_eq!(expected, StreamState::NoStream);
            assert_eq!(current, CurrentRevision::Current(0));
        }
        other => panic!("expected a wrong expected version, got {other:?}"),
    }

    let r = client
        .append_to_stream(
            "order-1",
            &expect(StreamState::StreamExists),
            json("Paid", 1),
        )
        .await
        .expect("stream_exists on an existing stream");
    assert_eq!(r.next_expected_version, 1);

    let r = client
        .append_to_stream(
            "order-1",
            &expect(StreamState::StreamRevision(1)),
            json("Shipped", 2),
        )
        .await
        .expect("the exact revision");
    assert_eq!(r.next_expected_version, 2);

    match client
        .append_to_stream(
            "order-1",
            &expect(StreamState::StreamRevision(1)),
            json("Shipped", 3),
        )
        .await
    {
        Err(kurrentdb::Error::WrongExpectedVersion { expected, current }) => {
            assert_eq!(expected, StreamState::StreamRevision(1));
            assert_eq!(current, CurrentRevision::Current(2));
        }
        other => panic!("expected a wrong expected version, got {other:?}"),
    }

    match client
        .append_to_stream(
            "order-2",
            &expect(StreamState::StreamExists),
            json("Paid", 0),
        )
        .await
    {
        Err(kurrentdb::Error::WrongExpectedVersion { expected, current }) => {
            assert_eq!(expected, StreamState::StreamExists);
            assert_eq!(current, CurrentRevision::NoStream);
        }
        other => panic!("expected a wrong expected version, got {other:?}"),
    }

    let r = client
        .append_to_stream("order-1", &expect(StreamState::Any), json("Closed", 4))
        .await
        .expect("any");
    assert_eq!(r.next_expected_version, 3);

    // The refused appends left nothing behind.
    let events = read_stream(&client, "order-1", &ReadStreamOptions::default()).await;
    let types: Vec<_> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(types, ["Placed", "Paid", "Shipped", "Closed"]);
    assert!(
        server
            .store
            .stream_version("order-2")
            .expect("version")
            .is_none()
    );
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_event_appends_read_both_ways_with_their_fields() {
    let (_dir, server) = start().await;
    let client = server.client();
    let id = uuid::Uuid::new_v4();
    let before = chrono_now_secs();
    client
        .append_to_stream(
            "cart-7",
            &expect(StreamState::NoStream),
            vec![
                json("Added", 0).id(id),
                json("Added", 1),
                json("Removed", 2),
            ],
        )
        .await
        .expect("append three");
    client
        .append_to_stream(
            "cart-7",
            &expect(StreamState::StreamRevision(2)),
            vec![
                json("Added", 3),
                EventData::binary("Blob", vec![0xff, 0x00, 0x01].into()),
            ],
        )
        .await
        .expect("append two");

    let forward = read_stream(
        &client,
        "cart-7",
        &ReadStreamOptions::default().max_count(4),
    )
    .await;
    assert_eq!(
        forward,
        [
            (0, "Added".to_owned(), 0),
            (1, "Added".to_owned(), 1),
            (2, "Removed".to_owned(), 2),
            (3, "Added".to_owned(), 3),
        ]
    );

    let mut read = client
        .read_stream(
            "cart-7",
            &ReadStreamOptions::default()
                .backwards()
                .position(StreamPosition::End),
        )
        .await
        .expect("read backwards");
    let mut revisions = Vec::new();
    while let Some(e) = read.next().await.expect("next") {
        let e = e.get_original_event();
        revisions.push(e.revision);
        match e.revision {
            4 => {
                assert!(!e.is_json, "binary data is not JSON");
                assert_eq!(&e.data[..], &[0xff, 0x00, 0x01]);
            }
            0 => {
                assert_eq!(e.id, id, "the id the client chose");
                assert!(e.is_json);
                let created = e.created.timestamp();
                assert!(created >= before - 1 && created <= chrono_now_secs() + 1);
            }
            _ => {}
        }
    }
    assert_eq!(revisions, [4, 3, 2, 1, 0]);

    let from_two = read_stream(
        &client,
        "cart-7",
        &ReadStreamOptions::default()
            .position(StreamPosition::Position(2))
            .max_count(2),
    )
    .await;
    assert_eq!(from_two.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3]);

    match client
        .read_stream("missing", &ReadStreamOptions::default())
        .await
    {
        Ok(mut r) => match r.next().await {
            Err(kurrentdb::Error::ResourceNotFound) => {}
            other => panic!("expected stream not found, got {other:?}"),
        },
        Err(kurrentdb::Error::ResourceNotFound) => {}
        Err(e) => panic!("expected stream not found, got {e}"),
    }
    server.shut_down().await;
}

fn chrono_now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_reads_both_ways_and_positions_round_trip() {
    let (_dir, server) = start().await;
    let client = server.client();
    client
        .append_to_stream(
            "a",
            &expect(StreamState::NoStream),
            vec![json("T", 0), json("T", 1)],
        )
        .await
        .expect("append");
    client
        .append_to_stream("b", &expect(StreamState::NoStream), json("T", 2))
        .await
        .expect("append");
    let last = client
        .append_to_stream(
            "a",
            &expect(StreamState::Any),
            vec![json("T", 3), json("T", 4), json("T", 5)],
        )
        .await
        .expect("append");

    let all = read_all(&client, &ReadAllOptions::default()).await;
    let names: Vec<_> = all.iter().map(|(s, r, _)| format!("{s}@{r}")).collect();
    assert_eq!(names, ["a@0", "a@1", "b@0", "a@2", "a@3", "a@4"]);
    for pair in all.windows(2) {
        assert!(pair[0].2 < pair[1].2, "positions increase: {:?}", pair);
    }
    assert_eq!(
        last.position, all[5].2,
        "an append answers the position of its last event"
    );

    // A read from any event's position starts at that very event, also inside an append.
    for (i, (_, _, position)) in all.iter().enumerate() {
        let from = read_all(
            &client,
            &ReadAllOptions::default().position(StreamPosition::Position(*position)),
        )
        .await;
        assert_eq!(from, all[i..], "from the position of event {i}");
    }

    let backwards = read_all(
        &client,
        &ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End),
    )
    .await;
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(backwards, reversed);

    let backwards_from = read_all(
        &client,
        &ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::Position(all[4].2))
            .max_count(3),
    )
    .await;
    assert_eq!(
        backwards_from,
        [all[4].clone(), all[3].clone(), all[2].clone()]
    );

    let limited = read_all(&client, &ReadAllOptions::default().max_count(2)).await;
    assert_eq!(limited, all[..2]);
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_appends_succeed_and_conflict() {
    let (_dir, server) = start().await;
    let client = server.client();
    // The client reads the supported methods (and the version) when it connects.
    client.server_info().await.expect("server info");
    let batch = client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("batch client");
    let r = batch
        .append_to_stream(
            "batched",
            StreamState::NoStream,
            vec![json("T", 0), json("T", 1)],
        )
        .await
        .expect("batch append");
    assert_eq!(r.current_revision(), Some(1));
    let conflict = batch
        .append_to_stream("batched", StreamState::NoStream, vec![json("T", 2)])
        .await;
    match conflict {
        Err(kurrentdb::Error::Grpc { code, message }) => {
            assert_eq!(code, tonic::Code::FailedPrecondition, "{message}");
            assert!(message.contains("wrong expected version"), "{message}");
        }
        other => panic!("a conflicting batch is refused, got {other:?}"),
    }
    // This client ends its batch session after a refused batch; a new one goes on.
    let batch = client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("batch client");
    let r = batch
        .append_to_stream(
            "batched",
            StreamState::StreamRevision(1),
            vec![json("T", 2)],
        )
        .await
        .expect("batch append at the exact revision");
    assert_eq!(r.current_revision(), Some(2));
    assert_eq!(
        server.store.stream_version("batched").expect("version"),
        Some(2)
    );
    server.shut_down().await;
}

/// Waits for the next event of a subscription, skipping other messages.
async fn next_event(sub: &mut kurrentdb::Subscription) -> kurrentdb::ResolvedEvent {
    loop {
        match tokio::time::timeout(PATIENCE, sub.next_subscription_event())
            .await
            .expect("an event in time")
            .expect("subscription")
        {
            SubscriptionEvent::EventAppeared(e) => return e,
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_all_subscription_catches_up_then_goes_live() {
    let (_dir, server) = start().await;
    let client = server.client();
    for i in 0..20u64 {
        let t = if i % 5 == 0 { "OrderPlaced" } else { "Noise" };
        client
            .append_to_stream(format!("s-{i}"), &expect(StreamState::NoStream), json(t, i))
            .await
            .expect("append");
    }
    let mut sub = client
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(StreamPosition::Start)
                .filter(SubscriptionFilter::on_event_type().add_prefix("Order")),
        )
        .await;
    let mut confirmed = false;
    let mut seen = Vec::new();
    let mut checkpoint = None;
    loop {
        let message = tokio::time::timeout(PATIENCE, sub.next_subscription_event())
            .await
            .expect("in time")
            .expect("subscription");
        match message {
            SubscriptionEvent::Confirmed(_) => confirmed = true,
            SubscriptionEvent::EventAppeared(e) => {
                seen.push(e.get_original_event().stream_id().to_owned());
            }
            SubscriptionEvent::Checkpoint(p) => checkpoint = Some(p),
            SubscriptionEvent::CaughtUp(_) => break,
            _ => {}
        }
    }
    assert!(confirmed, "a confirmation comes first");
    assert_eq!(seen, ["s-0", "s-5", "s-10", "s-15"]);
    let checkpoint = checkpoint.expect("a checkpoint at catch-up");

    // Live: the filter still applies.
    client
        .append_to_stream(
            "live",
            &expect(StreamState::Any),
            vec![json("Noise", 0), json("OrderShipped", 1)],
        )
        .await
        .expect("append");
    let e = next_event(&mut sub).await;
    let e = e.get_original_event();
    assert_eq!(
        (e.stream_id(), e.revision, e.event_type.as_str()),
        ("live", 1, "OrderShipped")
    );

    // Resuming from the checkpoint gives exactly what came after it.
    let mut resumed = client
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(StreamPosition::Position(checkpoint))
                .filter(SubscriptionFilter::on_stream_name().regex("^(?!s-)")),
        )
        .await;
    for revision in [0, 1] {
        let e = next_event(&mut resumed).await;
        let e = e.get_original_event();
        assert_eq!((e.stream_id(), e.revision), ("live", revision));
    }
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_subscription_survives_a_server_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let server = serve(&store_dir, "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let client = server.client();
    client
        .append_to_stream(
            "acct",
            &expect(StreamState::NoStream),
            vec![json("T", 0), json("T", 1)],
        )
        .await
        .expect("append");
    let mut sub = client
        .subscribe_to_stream(
            "acct",
            &SubscribeToStreamOptions::default()
                .start_from(StreamPosition::Start)
                .retry_options(
                    RetryOptions::default()
                        .retry_forever()
                        .retry_delay(Duration::from_millis(200)),
                ),
        )
        .await;
    assert_eq!(next_event(&mut sub).await.get_original_event().revision, 0);
    assert_eq!(next_event(&mut sub).await.get_original_event().revision, 1);

    server.shut_down().await;
    let server = serve(&store_dir, addr).await;
    // The client reconnects on its own; appends may be refused until it has.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match client
            .append_to_stream(
                "acct",
                &expect(StreamState::StreamRevision(1)),
                json("T", 2),
            )
            .await
        {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("append after the restart: {e}"),
        }
    }
    // The subscription resumes after the last event it saw: no repeat, no gap.
    assert_eq!(next_event(&mut sub).await.get_original_event().revision, 2);
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_supported_says_so() {
    let (_dir, server) = start().await;
    let client = server.client();
    let e = client
        .create_persistent_subscription("s", "g", &Default::default())
        .await
        .expect_err("persistent subscriptions are not supported");
    assert!(e.is_unsupported_feature(), "{e:?}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_and_hard_deletes_answer_as_clients_expect() {
    let (_dir, server) = start().await;
    let client = server.client();
    for n in 0..3 {
        client
            .append_to_stream("cart-1", &expect(StreamState::Any), json("Added", n))
            .await
            .expect("append");
    }
    // A delete guarded by a wrong revision is refused and deletes nothing.
    let e = client
        .delete_stream(
            "cart-1",
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(7)),
        )
        .await
        .expect_err("wrong expected revision");
    assert!(
        !matches!(e, kurrentdb::Error::ResourceDeleted),
        "a conflict, not a deleted stream: {e:?}"
    );
    assert_eq!(
        read_stream(&client, "cart-1", &ReadStreamOptions::default())
            .await
            .len(),
        3
    );

    // Soft delete: the stream reads as not found; an append re-creates it, and its
    // revisions go on after the old ones.
    let at = client
        .delete_stream(
            "cart-1",
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(2)),
        )
        .await
        .expect("soft delete");
    assert!(at.is_some(), "a delete reports its position");
    let mut read = client
        .read_stream("cart-1", &ReadStreamOptions::default())
        .await
        .expect("read");
    match read.next().await {
        Err(kurrentdb::Error::ResourceNotFound) | Ok(None) => {}
        other => panic!("a soft-deleted stream reads as not found, got {other:?}"),
    }
    let r = client
        .append_to_stream("cart-1", &expect(StreamState::NoStream), json("Added", 9))
        .await
        .expect("re-create after a soft delete");
    assert_eq!(r.next_expected_version, 3);

    // Hard delete: every later call on the stream says it is deleted.
    client
        .tombstone_stream("cart-1", &TombstoneStreamOptions::default())
        .await
        .expect("tombstone");
    let e = client
        .append_to_stream("cart-1", &expect(StreamState::Any), json("Added", 10))
        .await
        .expect_err("append to a tombstoned stream");
    assert!(matches!(e, kurrentdb::Error::ResourceDeleted), "{e:?}");
    let mut read = client
        .read_stream("cart-1", &ReadStreamOptions::default())
        .await
        .expect("read");
    match read.next().await {
        Err(kurrentdb::Error::ResourceDeleted) => {}
        other => panic!("a tombstoned stream reads as deleted, got {other:?}"),
    }
    let e = client
        .delete_stream("cart-1", &DeleteStreamOptions::default())
        .await
        .expect_err("deleting a tombstoned stream again");
    assert!(matches!(e, kurrentdb::Error::ResourceDeleted), "{e:?}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_appends_are_refused_and_the_server_goes_on() {
    let (_dir, server) = start().await;
    let client = server.client();
    let big = EventData::binary("Big", vec![7u8; 17 << 20].into());
    let e = client
        .append_to_stream("big", &expect(StreamState::Any), big)
        .await
        .expect_err("a message over the server's limit is refused");
    assert!(
        !matches!(e, kurrentdb::Error::WrongExpectedVersion { .. }),
        "refused as too large, not as a conflict: {e:?}"
    );
    // Through BatchAppend too: the refusal is answered, not a silent end of the call.
    client.server_info().await.expect("server info");
    let batch = client
        .batch_append(&BatchAppendOptions::default())
        .await
        .expect("batch client");
    let big = EventData::binary("Big", vec![7u8; 17 << 20].into());
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        batch.append_to_stream("big", StreamState::Any, vec![big]),
    )
    .await
    .expect("a refused batch is answered");
    assert!(
        refused.is_err(),
        "a batch over the limit is refused: {refused:?}"
    );
    let no_type = EventData::binary("", vec![1u8].into());
    let e = client
        .append_to_stream("untyped", &expect(StreamState::Any), no_type)
        .await
        .expect_err("an event without a type is refused");
    assert!(
        matches!(
            &e,
            kurrentdb::Error::Grpc {
                code: tonic::Code::InvalidArgument,
                ..
            }
        ),
        "{e:?}"
    );
    // Nothing of either was appended, and the server still serves.
    assert!(
        server
            .store
            .stream_version("big")
            .expect("version")
            .is_none()
    );
    assert!(
        server
            .store
            .stream_version("untyped")
            .expect("version")
            .is_none()
    );
    client
        .append_to_stream("after", &expect(StreamState::NoStream), json("T", 0))
        .await
        .expect("an append after the refused ones");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_metadata_is_read_and_written_through_the_metadata_stream() {
    use kurrentdb::{StreamMetadata, StreamMetadataResult};
    let (_dir, server) = start().await;
    let client = server.client();

    match client
        .get_stream_metadata("billing-1", &ReadStreamOptions::default())
        .await
        .expect("metadata of a stream that has none")
    {
        StreamMetadataResult::NotFound => {}
        other => panic!("expected no metadata, got {other:?}"),
    }
    for n in 0..5 {
        client
            .append_to_stream(
                "billing-1",
                &AppendToStreamOptions::default(),
                json("Billed", n),
            )
            .await
            .expect("append");
    }

    let mut custom = StreamMetadata::builder()
        .max_count(2)
        .max_age(Duration::from_secs(3600))
        .insert_custom_property("owner", "billing")
        .build();
    let written = client
        .set_stream_metadata("billing-1", &expect(StreamState::NoStream), &custom)
        .await
        .expect("first metadata");
    assert_eq!(written.next_expected_version, 0);

    // The store applies it at once: only the newest two events are read.
    let events = read_stream(&client, "billing-1", &ReadStreamOptions::default()).await;
    let revisions: Vec<u64> = events.iter().map(|(r, _, _)| *r).collect();
    assert_eq!(revisions, vec![3, 4]);
    match client
        .get_stream_metadata("billing-1", &ReadStreamOptions::default())
        .await
        .expect("metadata")
    {
        StreamMetadataResult::Success(m) => {
            assert_eq!(m.stream_name(), "$$billing-1");
            assert_eq!(m.version(), 0);
            assert_eq!(m.metadata(), &custom);
        }
        other => panic!("expected metadata, got {other:?}"),
    }
    let versioned = match client
        .get_stream_metadata(
            "billing-1",
            &ReadStreamOptions::default()
                .position(StreamPosition::End)
                .backwards(),
        )
        .await
        .expect("metadata, read backwards")
    {
        StreamMetadataResult::Success(m) => m,
        other => panic!("expected metadata, got {other:?}"),
    };
    assert_eq!(versioned.version(), 0);

    // The metadata stream's revision is the expected version of the next change.
    match client
        .set_stream_metadata("billing-1", &expect(StreamState::NoStream), &custom)
        .await
    {
        Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
            assert_eq!(current, CurrentRevision::Current(0));
        }
        other => panic!("expected a wrong expected version, got {other:?}"),
    }
    custom = StreamMetadata::builder().truncate_before(1).build();
    let written = client
        .set_stream_metadata(
            "billing-1",
            &expect(StreamState::StreamRevision(0)),
            &custom,
        )
        .await
        .expect("second metadata");
    assert_eq!(written.next_expected_version, 1);
    let events = read_stream(&client, "billing-1", &ReadStreamOptions::default()).await;
    assert_eq!(events.len(), 4, "$tb 1 hides revision 0 only: {events:?}");

    // Metadata that is not a JSON object is refused, and changes nothing.
    let refused = client
        .append_to_stream(
            "$$billing-1",
            &AppendToStreamOptions::default(),
            EventData::binary("$metadata", b"[1,2]".to_vec().into()),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    match client
        .get_stream_metadata("billing-1", &ReadStreamOptions::default())
        .await
        .expect("metadata")
    {
        StreamMetadataResult::Success(m) => {
            assert_eq!(m.version(), 1);
            assert_eq!(m.metadata(), &custom);
        }
        other => panic!("expected metadata, got {other:?}"),
    }
    server.shut_down().await;
}
