//! The server's log: one JSON object per line on standard error, for starts, stops and
//! errors (what an operator greps or ships to a log store).

use std::io::Write as _;

/// Writes one log line: `{"ts":…,"level":…,"event":…,…fields}`.
pub(super) fn emit(level: &str, event: &str, fields: serde_json::Value) {
    let mut line = serde_json::Map::new();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    line.insert(
        "ts_ms".into(),
        serde_json::Value::from(ts.as_millis() as u64),
    );
    line.insert("level".into(), level.into());
    line.insert("event".into(), event.into());
    if let serde_json::Value::Object(fields) = fields {
        line.extend(fields);
    }
    let mut text = serde_json::Value::Object(line).to_string();
    text.push('\n');
    // A log line that cannot be written (stderr closed) is dropped; serving goes on.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
