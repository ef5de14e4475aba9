//! The tests of `streamlog serve` with the official KurrentDB clients, one module per file
//! of `tests/`, built as one test binary (`autotests = false` and the `[[test]]` target
//! `server` in Cargo.toml): each binary links the server and the Rust client, so one
//! binary links once, and its tests share the harness's threads (the Python client's and
//! the cluster's long tests run beside the others rather than one binary after another).
//!
//! One file's tests: `cargo test --release --test server cluster::`.

mod cluster;
mod cluster_tls;
mod kurrent_client;
mod lean_client;
mod python_client;
mod secure;
