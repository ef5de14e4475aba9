//! A bank account as an event stream: deposits and withdrawals are events, the balance is
//! found by replaying them. A withdrawal is checked against the replayed balance and
//! appended with the version it was decided on, so two tellers can never overdraw the
//! account: the second one's append fails with `WrongExpectedVersion` and it retries.
//!
//! Run it with `cargo run --example bank [DIR]` (a temporary directory by default).

use std::path::PathBuf;

use streamlog::{Error, ExpectedVersion, NewEvent, Store};

/// The state of an account, rebuilt from its events.
#[derive(Debug, Default)]
struct Account {
    balance: i64,
    version: Option<u64>,
}

impl Account {
    fn apply(&mut self, event_type: &str, amount: i64) {
        match event_type {
            "Deposited" => self.balance += amount,
            "Withdrawn" => self.balance -= amount,
            _ => {}
        }
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

fn load(store: &Store, stream: &str) -> streamlog::Result<Account> {
    let mut account = Account::default();
    for e in store.read_stream(stream, 0)? {
        let e = e?;
        account.apply(&e.event_type, amount_of(&e.data));
        account.version = Some(e.version);
    }
    Ok(account)
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
        let account = load(store, stream)?;
        if account.balance < amount {
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
    let store = Store::open(&dir)?;
    let stream = "account-42";
    deposit(&store, stream, 100)?;
    deposit(&store, stream, 50)?;
    println!("withdraw 120: {}", withdraw(&store, stream, 120)?);
    println!("withdraw 120 again: {}", withdraw(&store, stream, 120)?);
    let account = load(&store, stream)?;
    println!(
        "balance of {stream}: {} after {} events (store in {})",
        account.balance,
        account.version.map_or(0, |v| v + 1),
        dir.display()
    );
    assert_eq!(account.balance, 30);
    store.close()?;
    Ok(())
}
