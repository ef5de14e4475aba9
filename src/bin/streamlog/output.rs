//! JSON output: one object per line, fields in a fixed order, payloads rendered as JSON,
//! text or base64, timestamps as RFC 3339.

use std::io::Write;

use base64::Engine as _;
use serde_json::{Map, Value};
use streamlog::inspect::{FrameHeader, FrameKind};
use streamlog::{RecordedEvent, RecoveryReport, SnapshotReport};

/// A JSON object built field by field; its fields print in the order they were added
/// (serde_json's `preserve_order`).
#[derive(Debug, Default)]
pub struct Obj {
    map: Map<String, Value>,
}

impl Obj {
    pub fn new() -> Self {
        Obj::default()
    }

    /// Adds a field holding any JSON value.
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.map.insert(key.to_string(), value.into());
        self
    }

    /// Adds a field whose value is JSON text (numbers kept digit for digit, through
    /// serde_json's `arbitrary_precision`); text that is not JSON is added as a string.
    pub fn raw(self, key: &str, json: &str) -> Self {
        let value = serde_json::from_str::<Value>(json).unwrap_or_else(|_| json.into());
        self.field(key, value)
    }

    /// Adds a nested object.
    pub fn obj(self, key: &str, value: Obj) -> Self {
        self.field(key, Value::Object(value.map))
    }

    /// Adds a field, or `null` when `value` is `None`.
    pub fn opt_obj(self, key: &str, value: Option<Obj>) -> Self {
        match value {
            Some(v) => self.obj(key, v),
            None => self.field(key, Value::Null),
        }
    }

    /// The compact JSON text.
    pub fn finish(self) -> String {
        Value::Object(self.map).to_string()
    }
}

/// Writes one object as one line.
pub fn line(out: &mut impl Write, obj: Obj) -> std::io::Result<()> {
    let mut text = obj.finish();
    text.push('\n');
    out.write_all(text.as_bytes())
}

/// JSON array text from already-rendered elements.
pub fn array(items: impl IntoIterator<Item = String>) -> String {
    let values: Vec<Value> = items
        .into_iter()
        .map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text)))
        .collect();
    Value::Array(values).to_string()
}

/// Adds a payload field: its JSON value if the bytes are JSON, else a string if they are
/// UTF-8, else `<key>_base64`.
pub fn payload(obj: Obj, key: &str, bytes: &[u8]) -> Obj {
    match std::str::from_utf8(bytes) {
        Ok(text) => match serde_json::from_str::<Value>(text) {
            Ok(json) => obj.field(key, json),
            Err(_) => obj.field(key, text),
        },
        Err(_) => obj.field(
            &format!("{key}_base64"),
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
    }
}

/// One event as a JSON object.
pub fn event(e: &RecordedEvent) -> Obj {
    let obj = Obj::new()
        .field("stream", &*e.stream)
        .field("version", e.version)
        .field("position", e.position.0)
        .field("type", e.event_type.as_str())
        .field("id", e.id.to_string())
        .field("timestamp", rfc3339_us(e.timestamp_us))
        .field("timestamp_us", e.timestamp_us)
        .field("committed_at", e.committed_at_us.and_then(rfc3339_us))
        .field("committed_at_us", e.committed_at_us)
        .field("schema_version", e.schema_version);
    let obj = payload(obj, "data", &e.data);
    payload(obj, "metadata", &e.metadata)
}

/// A frame header's fields.
pub fn frame_header(h: &FrameHeader) -> Obj {
    Obj::new()
        .field(
            "kind",
            match h.kind {
                FrameKind::Events => "events",
                FrameKind::Checkpoint => "checkpoint",
                FrameKind::Snapshot => "snapshot",
                FrameKind::Padding => "padding",
                FrameKind::Record => "record",
            },
        )
        .field("position", h.position)
        .field("watermark", h.watermark)
        .field("body_len", h.body_len)
        .field("frame_len", h.frame_len())
        .field("crc", format!("{:08x}", h.crc))
}

/// The recovery report of an open.
pub fn recovery(r: &RecoveryReport) -> Obj {
    let truncated = r.truncated.as_ref().map(|t| {
        Obj::new()
            .field("file", t.file.display().to_string())
            .field("offset", t.offset)
            .field("position", t.position)
            .field("frames_dropped", t.frames_dropped)
            .field("bytes_dropped", t.bytes_dropped)
            .field("reason", t.reason.as_str())
    });
    Obj::new()
        .field("segments", r.segments)
        .field("frames", r.frames)
        .field("clean_shutdown", r.clean_shutdown)
        .field("attested_position", r.attested_position)
        .opt_obj("truncated", truncated)
        .field(
            "removed_segments",
            r.removed_segments
                .iter()
                .map(|p| Value::String(p.display().to_string()))
                .collect::<Vec<_>>(),
        )
        .field("replayed_from", r.replayed_from)
        .obj(
            "index",
            Obj::new()
                .field("tables", r.index.tables)
                .field("table_entries", r.index.table_entries)
                .field("covered_position", r.index.covered_position)
                .field("replayed_frames", r.index.replayed_frames)
                .field("rebuilt", r.index.rebuilt.as_deref())
                .field(
                    "removed_files",
                    r.index
                        .removed_files
                        .iter()
                        .map(|p| Value::String(p.display().to_string()))
                        .collect::<Vec<_>>(),
                ),
        )
}

/// What opening the snapshot files found: the live generation, a torn tail cut (read-only:
/// that would be cut), a generation discarded and why.
pub fn snapshot_recovery(r: &SnapshotReport) -> Obj {
    Obj::new()
        .field("generation", r.generation)
        .field("truncated_bytes", r.truncated_bytes)
        .field("discarded", r.discarded.as_deref())
}

/// Microseconds since the Unix epoch as RFC 3339 UTC with microseconds,
/// e.g. `2024-05-01T12:34:56.789012Z`; `None` outside the range of years -9999..=9999 that the time crate (`jiff`) handles (the event's
/// `timestamp_us` still tells it).
pub fn rfc3339_us(us: i64) -> Option<String> {
    let t = jiff::Timestamp::from_microsecond(us).ok()?;
    Some(format!("{t:.6}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339() {
        let f = |us| rfc3339_us(us).unwrap_or_default();
        assert_eq!(f(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(f(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(f(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(f(253_402_128_000_000_001), "9999-12-30T00:00:00.000001Z");
        assert_eq!(f(-1), "1969-12-31T23:59:59.999999Z");
        // Outside the calendar range: no text, and no panic.
        assert_eq!(rfc3339_us(i64::MIN), None);
        assert_eq!(rfc3339_us(i64::MAX), None);
    }

    #[test]
    fn payloads_render_as_json_text_or_base64() {
        let f = |b: &[u8]| payload(Obj::new(), "data", b).finish();
        assert_eq!(f(b"{ \"a\" : [1, 2] }"), r#"{"data":{"a":[1,2]}}"#);
        assert_eq!(f(b"hello"), r#"{"data":"hello"}"#);
        assert_eq!(f(b""), r#"{"data":""}"#);
        assert_eq!(
            f(b"{\"n\": 123456789012345678901234567890}"),
            r#"{"data":{"n":123456789012345678901234567890}}"#
        );
        assert_eq!(f(b"\"a b\\\" c\""), r#"{"data":"a b\" c"}"#);
        assert_eq!(f(&[0xff, 0x00]), r#"{"data_base64":"/wA="}"#);
    }
}
