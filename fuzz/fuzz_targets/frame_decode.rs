//! The frame codec (`streamlog::format`) on arbitrary bytes: decoding never panics, and
//! whatever body decodes re-encodes to the same bytes and decodes to the same thing.
//!
//! Input: one mode byte, then the bytes. Mode bit 0 set: the harness first fixes the CRCs
//! (segment header and frame) so the checks behind them are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamlog::format::{
    self, FRAME_HEADER_LEN, FrameKind, SEGMENT_HEADER_LEN, check_frame, decode_events_body,
    decode_events_summary, decode_frame_header, decode_segment_header, encode_events_frame,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    let fix = mode & 1 == 1;

    // Segment header.
    if fix && bytes.len() >= SEGMENT_HEADER_LEN {
        let crc = crc32fast::hash(&bytes[..SEGMENT_HEADER_LEN - 4]);
        bytes[SEGMENT_HEADER_LEN - 4..SEGMENT_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(h) = decode_segment_header(&bytes) {
        // A decodable header re-encodes to the same bytes.
        let enc = format::encode_segment_header(&h);
        assert_eq!(
            &enc[..],
            &bytes[..SEGMENT_HEADER_LEN],
            "segment header round trip"
        );
    }

    // Frame header and whole frame.
    if let Ok(h) = decode_frame_header(&bytes) {
        if fix {
            let end = usize::try_from(h.frame_len())
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            if end >= 12 {
                let crc = crc32fast::hash(&bytes[12..end]);
                bytes[8..12].copy_from_slice(&crc.to_le_bytes());
            }
        }
        let h = decode_frame_header(&bytes).expect("fixing the CRC keeps the header decodable");
        let checked = check_frame(&h, &bytes, h.position);
        if checked.is_ok() {
            let len = h.frame_len() as usize;
            assert!(len <= bytes.len());
            let _ = check_frame(&h, &bytes, h.position.wrapping_add(1)).expect_err("misplaced");
            if h.kind == FrameKind::Events {
                let body = &bytes[FRAME_HEADER_LEN..len];
                let _ = decode_events_summary(&h, body);
                round_trip(&h, body, h.position, h.watermark);
            }
        }
    }

    // Bodies on their own, read with either layout (format 1 and 2).
    for flags in [0, format::EVENTS_FLAG_COMMITTED] {
        let h = format::FrameHeader {
            body_len: bytes.len() as u32,
            crc: 0,
            kind: FrameKind::Events,
            flags,
            position: 4096,
            watermark: 0,
        };
        let _ = decode_events_summary(&h, &bytes);
        round_trip(&h, &bytes, 4096, 0);
    }
});

/// If `body` decodes, encode it again and check the frame decodes to the same body and the
/// same bytes (the encoding is canonical: decoding refuses trailing bytes).
fn round_trip(header: &format::FrameHeader, body: &[u8], position: u64, watermark: u64) {
    let Ok(decoded) = decode_events_body(header, body) else {
        // Whatever the full decoder refuses, the summary may accept, but not the reverse.
        return;
    };
    let summary = decode_events_summary(header, body).expect("a decodable body has a summary");
    assert_eq!(
        summary,
        (
            decoded.stream,
            decoded.first_version,
            decoded.events.len() as u32
        )
    );
    let mut out = vec![0xEE; 3];
    let n = encode_events_frame(
        &mut out,
        position,
        watermark,
        &format::EventsFrame {
            committed_at_us: decoded.committed_at_us,
            stream: decoded.stream,
            first_version: decoded.first_version,
            events: &decoded.events,
            checkpoint: decoded.checkpoint,
        },
    );
    let frame = &out[3..];
    assert_eq!(n.len, frame.len());
    assert_eq!(
        frame.len(),
        FRAME_HEADER_LEN + body.len(),
        "re-encoded length"
    );
    let h = decode_frame_header(frame).expect("re-encoded header decodes");
    assert_eq!(h.kind, FrameKind::Events);
    assert_eq!((h.position, h.watermark), (position, watermark));
    assert_eq!(u64::from(h.body_len), body.len() as u64);
    check_frame(&h, frame, position).expect("re-encoded frame checks");
    assert_eq!(
        &frame[FRAME_HEADER_LEN..],
        body,
        "re-encoded body bytes differ"
    );
    assert_eq!(h.flags, header.flags, "re-encoded layout");
    let again =
        decode_events_body(&h, &frame[FRAME_HEADER_LEN..]).expect("re-encoded body decodes");
    assert_eq!(again, decoded, "round trip changed the body");
}
