//! Upcasters rewrite events of older schema versions on every read path, chained, and
//! leave the log as it was written.

#![allow(clippy::unwrap_used)]

use std::ops::ControlFlow;
use std::time::Duration;

use streamlog::{
    Aggregate, Delivery, EventView, ExpectedVersion, NewEvent, Options, Position, SubscribeAll,
    SubscribeStream, Upcast, Upcasters,
};

/// v1 `Registered` has `name`; v2 renamed it `full_name`; v3 adds `tier`. `AddressChanged`
/// v1 is split by content into `Moved` or `AddressCorrected` (v2 each).
fn upcasters() -> Upcasters {
    Upcasters::new()
        .register("Registered", 1, |e| Upcast {
            data: String::from_utf8(e.data)
                .unwrap()
                .replace("\"name\":", "\"full_name\":")
                .into_bytes(),
            schema_version: 2,
            ..e
        })
        .register("Registered", 2, |e| {
            let mut data = String::from_utf8(e.data).unwrap();
            data.pop();
            data.push_str(",\"tier\":\"basic\"}");
            Upcast {
                data: data.into_bytes(),
                schema_version: 3,
                ..e
            }
        })
        .register("AddressChanged", 1, |e| {
            let moved = String::from_utf8_lossy(&e.data).contains("\"reason\":\"moved\"");
            Upcast {
                event_type: if moved { "Moved" } else { "AddressCorrected" }.into(),
                schema_version: 2,
                ..e
            }
        })
}

const UPCAST_V1: &str = "{\"full_name\":\"Ada\",\"tier\":\"basic\"}";

fn write_history(dir: &std::path::Path) {
    let store = streamlog::Store::open(dir).unwrap();
    store
        .append(
            "customer-1",
            ExpectedVersion::NoStream,
            [
                NewEvent::new("Registered", "{\"name\":\"Ada\"}").with_schema_version(1),
                NewEvent::new("Registered", "{\"full_name\":\"Ada\"}").with_schema_version(2),
                NewEvent::new("Registered", UPCAST_V1).with_schema_version(3),
                NewEvent::new("AddressChanged", "{\"reason\":\"moved\"}").with_schema_version(1),
                NewEvent::new("AddressChanged", "{\"reason\":\"typo\"}").with_schema_version(1),
                NewEvent::new("Unrelated", "x"),
            ],
        )
        .unwrap();
    store.close().unwrap();
}

fn expected() -> Vec<(String, u32, String)> {
    vec![
        ("Registered".into(), 3, UPCAST_V1.into()),
        ("Registered".into(), 3, UPCAST_V1.into()),
        ("Registered".into(), 3, UPCAST_V1.into()),
        ("Moved".into(), 2, "{\"reason\":\"moved\"}".into()),
        ("AddressCorrected".into(), 2, "{\"reason\":\"typo\"}".into()),
        ("Unrelated".into(), 0, "x".into()),
    ]
}

fn of(e: &EventView<'_>) -> (String, u32, String) {
    (
        e.event_type.to_string(),
        e.schema_version,
        String::from_utf8(e.data.to_vec()).unwrap(),
    )
}

#[derive(Default)]
struct Seen(Vec<(String, u32, String)>);

impl Aggregate for Seen {
    const SCHEMA: &'static str = "seen";
    fn apply(&mut self, e: &EventView<'_>) {
        self.0.push(of(e));
    }
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Option<Self> {
        None
    }
}

#[test]
fn upcasters_apply_on_every_read_path() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path());
    let store =
        streamlog::Store::open_with(dir.path(), Options::default().with_upcasters(upcasters()))
            .unwrap();
    let want = expected();

    let owned: Vec<_> = store
        .read_stream("customer-1", 0)
        .unwrap()
        .map(|e| of(&e.unwrap().view()))
        .collect();
    assert_eq!(owned, want, "read_stream");

    let mut back: Vec<_> = store
        .read_stream_backward("customer-1", None)
        .unwrap()
        .map(|e| of(&e.unwrap().view()))
        .collect();
    back.reverse();
    assert_eq!(back, want, "read_stream_backward");

    let mut borrowed = Vec::new();
    store
        .read_stream("customer-1", 0)
        .unwrap()
        .for_each_view(|e| {
            borrowed.push(of(&e));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(borrowed, want, "read_stream borrowed");

    let all: Vec<_> = store
        .read_all(Position::START)
        .unwrap()
        .map(|e| of(&e.unwrap().view()))
        .collect();
    assert_eq!(all, want, "read_all");

    let mut all_borrowed = Vec::new();
    store
        .read_all(Position::START)
        .unwrap()
        .for_each_view(|e| {
            all_borrowed.push(of(&e));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(all_borrowed, want, "read_all borrowed");

    assert_eq!(
        store.load::<Seen>("customer-1").unwrap().state.0,
        want,
        "load"
    );

    for sub in [
        store.subscribe_all(SubscribeAll::from_start()).unwrap(),
        store
            .subscribe_stream(SubscribeStream::new("customer-1"))
            .unwrap(),
    ] {
        let mut sub = sub;
        let mut got = Vec::new();
        while got.len() < want.len() {
            match sub.next_timeout(Duration::from_secs(5)).unwrap() {
                Some(Delivery::Event(e)) => got.push(of(&e.view())),
                Some(_) => {}
                None => panic!("subscription stalled after {got:?}"),
            }
        }
        assert_eq!(got, want, "subscription");
    }
}

#[test]
fn without_upcasters_events_read_as_written() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path());
    let store = streamlog::Store::open(dir.path()).unwrap();
    let raw: Vec<_> = store
        .read_stream("customer-1", 0)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.event_type, e.schema_version)
        })
        .collect();
    assert_eq!(
        raw,
        vec![
            ("Registered".to_string(), 1),
            ("Registered".to_string(), 2),
            ("Registered".to_string(), 3),
            ("AddressChanged".to_string(), 1),
            ("AddressChanged".to_string(), 1),
            ("Unrelated".to_string(), 0),
        ]
    );
}

#[test]
fn an_upcaster_cycle_stops_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path());
    let cyclic = Upcasters::new()
        .register("Unrelated", 0, |e| Upcast {
            schema_version: 1,
            ..e
        })
        .register("Unrelated", 1, |e| Upcast {
            schema_version: 0,
            ..e
        });
    let store =
        streamlog::Store::open_with(dir.path(), Options::default().with_upcasters(cyclic)).unwrap();
    let last = store
        .read_stream("customer-1", 5)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        (last.event_type.as_str(), last.schema_version),
        ("Unrelated", 0)
    );
}
