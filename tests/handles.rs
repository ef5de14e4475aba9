//! `Store` handles: clones share one store, the last one to go closes it.
#![allow(clippy::unwrap_used)]

use streamlog::{Error, ExpectedVersion, NewEvent, Store};

#[test]
fn clones_share_one_store_and_the_last_dropped_closes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let other = store.clone();
    let t = std::thread::spawn(move || {
        other
            .append("s", ExpectedVersion::NoStream, [NewEvent::new("T", "a")])
            .unwrap();
    });
    t.join().unwrap();
    // The clone is gone; the store is still open and sees the clone's append.
    assert_eq!(store.stream_version("s").unwrap(), Some(0));
    store
        .append("s", ExpectedVersion::Exact(0), [NewEvent::new("T", "b")])
        .unwrap();
    let reader = store.read_stream("s", 0).unwrap();
    drop(store);
    // A reader outliving every handle still reads what was there.
    assert_eq!(reader.count(), 2);
    let reopened = Store::open(tmp.path()).unwrap();
    assert!(
        reopened.recovery_report().clean_shutdown,
        "dropping the last handle closed the store cleanly"
    );
    assert_eq!(reopened.stream_version("s").unwrap(), Some(1));
}

#[test]
fn closing_through_one_handle_closes_it_for_all() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let other = store.clone();
    store
        .append("s", ExpectedVersion::NoStream, [NewEvent::new("T", "a")])
        .unwrap();
    store.close().unwrap();
    let err = other
        .append("s", ExpectedVersion::Any, [NewEvent::new("T", "b")])
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
    // Reads of what is stored go on.
    assert_eq!(other.stream_version("s").unwrap(), Some(0));
    drop(other);
    let reopened = Store::open(tmp.path()).unwrap();
    assert!(reopened.recovery_report().clean_shutdown);
    assert_eq!(reopened.stream_version("s").unwrap(), Some(0));
}
