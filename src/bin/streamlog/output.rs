//! JSON output: one object per line, fields in a fixed order, payloads rendered as JSON,
//! text or base64, timestamps as RFC 3339.

use std::io::Write;

use base64::Engine as _;
use serde_json::Value;
use streamlog::format::{FrameHeader, FrameKind};
use streamlog::{RecordedEvent, RecoveryReport};

/// A JSON object written field by field, keeping the order the fields were added in
/// (serde_json's own map sorts keys).
#[derive(Debug, Default)]
pub struct Obj {
    buf: String,
}

impl Obj {
    pub fn new() -> Self {
        Obj::default()
    }

    fn key(&mut self, key: &str) {
        self.buf.push(if self.buf.is_empty() { '{' } else { ',' });
        self.buf
            .push_str(&Value::String(key.to_string()).to_string());
        self.buf.push(':');
    }

    /// Adds a field holding any JSON value.
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.key(key);
        self.buf.push_str(&value.into().to_string());
        self
    }

    /// Adds a field whose value is already valid, compact JSON text.
    pub fn raw(mut self, key: &str, json: &str) -> Self {
        self.key(key);
        self.buf.push_str(json);
        self
    }

    /// Adds a nested object.
    pub fn obj(self, key: &str, value: Obj) -> Self {
        let text = value.finish();
        self.raw(key, &text)
    }

    /// Adds a field, or `null` when `value` is `None`.
    pub fn opt_obj(self, key: &str, value: Option<Obj>) -> Self {
        match value {
            Some(v) => self.obj(key, v),
            None => self.raw(key, "null"),
        }
    }

    /// The JSON text.
    pub fn finish(mut self) -> String {
        if self.buf.is_empty() {
            self.buf.push('{');
        }
        self.buf.push('}');
        self.buf
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
    let mut s = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&item);
    }
    s.push(']');
    s
}

/// Removes the whitespace between the tokens of valid JSON text, leaving strings and
/// numbers exactly as they were (so no number loses precision by a parse and re-print).
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// Adds a payload field: its JSON value if the bytes are JSON, else a string if they are
/// UTF-8, else `<key>_base64`.
pub fn payload(obj: Obj, key: &str, bytes: &[u8]) -> Obj {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            if serde_json::from_str::<Value>(text).is_ok() {
                obj.raw(key, &compact_json(text))
            } else {
                obj.field(key, text)
            }
        }
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
        .field("timestamp_us", e.timestamp_us);
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

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Microseconds since the Unix epoch as RFC 3339 UTC with microseconds,
/// e.g. `2024-05-01T12:34:56.789012Z`.
pub fn rfc3339_us(us: i64) -> String {
    const US_PER_DAY: i64 = 86_400_000_000;
    let days = us.div_euclid(US_PER_DAY);
    let in_day = us.rem_euclid(US_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1_000_000;
    let micros = in_day % 1_000_000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_us(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            rfc3339_us(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(rfc3339_us(-1), "1969-12-31T23:59:59.999999Z");
        // Extremes do not panic.
        let _ = rfc3339_us(i64::MIN);
        let _ = rfc3339_us(i64::MAX);
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
