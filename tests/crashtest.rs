//! The process-level crash test: `streamlog crashtest` SIGKILLs a real writer process at
//! random moments and checks that no acknowledged event is ever lost.
//!
//! Runs 50 cycles by default; `STREAMLOG_KILL_CYCLES=N` runs N instead (the long version).

#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_event() {
    let cycles: u64 = std::env::var("STREAMLOG_KILL_CYCLES")
        .ok()
        .map(|v| v.parse().expect("STREAMLOG_KILL_CYCLES must be a number"))
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .args(["crashtest", "--writers", "4", "--json", "--cycles"])
        .arg(cycles.to_string())
        .arg("--dir")
        .arg(&store)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON summary ({e}); stdout: {stdout}; stderr: {stderr}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "crashtest failed: {summary}; stderr: {stderr}"
    );
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["corrupted_opens"], 0, "{summary}");
    assert_eq!(summary["cycles"], cycles, "{summary}");
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(summary["failure"].is_null(), "{summary}");
    // The test did something: the writers got appends acknowledged, and the check read them.
    let acked = summary["acknowledged_events"].as_u64().unwrap();
    assert!(acked > 0, "{summary}");
    assert!(
        summary["events_checked"].as_u64().unwrap() >= acked,
        "{summary}"
    );
}
