//! The loopback benchmark's lean load generator (`streamlog_server_tests::lean`) against
//! the server: its appends are stored and answered as the official client's are, so the
//! benchmark's two clients measure the same work.

use streamlog::{ResumeToken, Store};
use streamlog_server_tests::lean::LeanClient;
use streamlog_server_tests::serve_in_process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_client_appends_are_stored_and_answered_with_their_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (addr, stop, served) = serve_in_process(&store).await;

    let mut client = LeanClient::connect(addr).await.expect("connect");
    for expected_revision in 0..3u64 {
        let revision = client
            .append_any(
                "lean-1",
                "Deposited",
                bytes::Bytes::from_static(b"{\"n\":1}"),
            )
            .await
            .expect("append");
        assert_eq!(revision, expected_revision);
    }
    let other = client
        .append_any("lean-2", "Withdrawn", bytes::Bytes::from_static(b"x"))
        .await
        .expect("append");
    assert_eq!(other, 0);

    let _ = stop.send(());
    served.await.expect("server task").expect("server");
    let stored: Vec<_> = store
        .read_stream("lean-1", 0)
        .expect("read")
        .map(|e| e.expect("event"))
        .collect();
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|e| e.event_type == "Deposited"));
    assert_eq!(
        stored.first().map(|e| e.data.as_slice()),
        Some(&b"{\"n\":1}"[..])
    );
    let all = store
        .read_all(ResumeToken::START)
        .expect("read $all")
        .count();
    assert_eq!(all, 4);
    store.close().expect("close");
}
