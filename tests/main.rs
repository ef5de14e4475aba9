//! The core crate's integration tests, one module per file of `tests/`, built as one test
//! binary (`autotests = false` and the `[[test]]` target `integration` in Cargo.toml).
//!
//! One binary rather than one per file: each binary links the whole crate and its
//! dependencies (tonic, openraft, …), and on two cores linking some thirty of them was a
//! large part of `cargo test --release`. One binary also runs every file's tests on the
//! harness's threads together, so a file with one long test no longer leaves a core idle.
//!
//! One file's tests: `cargo test --release --test integration recovery::` (a module path
//! filter: `recovery::on_sim::`, or a whole test name, works the same way).

// Tests unwrap (a failure is a panic); each file says so too, this covers `backend`.
#![allow(clippy::unwrap_used)]

// The scenarios of tests/store.rs and tests/recovery.rs run on both storage backends.
mod backend;

mod cli;
#[cfg(feature = "cluster")]
mod cluster_raft;
#[cfg(feature = "cluster")]
mod cluster_storage;
mod concurrency;
mod crashtest;
mod exactly_once;
mod fuzz_regressions;
mod handles;
mod index;
mod lifecycle;
mod model;
mod newer_format;
mod older_formats;
mod read_ahead;
mod recovery;
mod scavenge;
mod sim_crash;
mod sim_faults;
mod sim_scavenge;
mod sim_snapshots;
mod sim_subscribe;
mod snapshots;
mod store;
mod subscribe;
mod time_travel;
mod upcast;
mod verify;
