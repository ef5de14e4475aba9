//! A bank account as an event stream: deposits and withdrawals are events, the balance is
//! an [`Aggregate`] loaded as the latest snapshot plus the events after it. A withdrawal is
//! checked against the loaded balance and appended with the version it was decided on, so
//! two tellers can never overdraw the account: the second one's append fails with
//! `WrongExpectedVersion` and it retries. A snapshot policy keeps loads short however long
//! the account's history grows.
//!
//! Run it with `cargo run --example bank [DIR]` (a temporary directory by default).

use std::path::PathBuf;

use streamlog::{
    Aggregate, Error, EventView, ExpectedVersion, NewEvent, Options, SnapshotPolicy, Store,
};

/// The state of an account, folded from its events.
#[derive(Debug, Default)]
struct Account {
    balance: i64,
}

impl Aggregate for Account {
    const SCHEMA: &'static str = "account-v1";

    fn apply(&mut self, e: &EventView<'_>) {
        let amount = amount_of(e.data);
        match e.event_type {
            "Deposited" => self.balance += amount,
            "Withdrawn" => self.balance -= amount,
            _ => {}
        }
    }

    fn encode(&self) -> Vec<u8> {
        self.balance.to_le_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Account {
            balance: i64::from_le_bytes(bytes.try_into().ok()?),
        })
    }
}

fn amount_of(data: &[u8]) -> i64 {
    // Events carry `{"amount":N}`; this example keeps its parsing to the one field.
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| {
            s.trim_start_matches("{\"amount\":")
                .trim_end_matches('}')
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn deposit(store: &Store, stream: &str, amount: i64) -> streamlog::Result<()> {
    let data = format!("{{\"amount\":{amount}}}");
    store.append(
        stream,
        ExpectedVersion::Any,
        [NewEvent::new("Deposited", data)],
    )?;
    Ok(())
}

/// Withdraws if the balance allows, deciding on a consistent state: retried when another
/// writer got in between.
fn withdraw(store: &Store, stream: &str, amount: i64) -> streamlog::Result<bool> {
    loop {
        let account = store.load::<Account>(stream)?;
        if account.state.balance < amount {
            return Ok(false);
        }
        let expected = account
            .version
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let data = format!("{{\"amount\":{amount}}}");
        match store.append(stream, expected, [NewEvent::new("Withdrawn", data)]) {
            Ok(_) => return Ok(true),
            Err(Error::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp;
    let dir = match std::env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("bank")
        }
    };
    // Save a snapshot whenever a load finds 100 or more events since the last one.
    let options = Options::default().with_snapshot_policy(SnapshotPolicy::EveryEvents(100));
    let store = Store::open_with(&dir, options)?;
    let stream = "account-42";
    deposit(&store, stream, 100)?;
    deposit(&store, stream, 50)?;
    println!("withdraw 120: {}", withdraw(&store, stream, 120)?);
    println!("withdraw 120 again: {}", withdraw(&store, stream, 120)?);

    // A long history: each load replays at most ~100 events thanks to the policy.
    for _ in 0..500 {
        deposit(&store, stream, 1)?;
        withdraw(&store, stream, 1)?;
    }
    let account = store.load::<Account>(stream)?;
    println!(
        "balance of {stream}: {} at version {:?}; loaded from the snapshot at version {:?} \
         plus {} events (store in {})",
        account.state.balance,
        account.version,
        account.snapshot_version,
        account.replayed,
        dir.display()
    );
    assert_eq!(account.state.balance, 30);
    assert!(account.replayed <= 100);
    store.close()?;
    Ok(())
}
