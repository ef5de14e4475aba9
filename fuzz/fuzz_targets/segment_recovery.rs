//! Recovery (`Store::open_with` on a `SimStorage`) of arbitrary segment files: it returns
//! `Ok` or a typed error, never panics or hangs; an opened store reads back consistently
//! (see `check_store`), closes, and reopens to the same events.
//!
//! The first input byte picks a mode:
//! - 0: raw bytes become `segments/00000000000000000000.seg`, optionally split into a
//!   second segment that starts where the first ends;
//! - 1: a valid, cleanly closed template log (all its files) with a few bytes overwritten
//!   at positions the input chooses, and optionally its last segment cut short: what opens
//!   must be a prefix of the template's events;
//! - 2: segments assembled by the harness from input-chosen operations (frames with valid
//!   CRCs and honest positions, checkpoints, garbage, zero runs, new segments, a torn
//!   end); some operations forge frames (valid CRC, inconsistent versions or malformed
//!   body), after which only "no panic, no hang, reopen works" is required.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use streamlog::format::{
    self, EventRecord, SEGMENT_HEADER_LEN, SEGMENT_KIND_EVENTS, SegmentHeader,
};
use streamlog::io::Storage;
use streamlog::io::sim::SimStorage;
use streamlog::segment::segment_file_name;
use streamlog_fuzz::{DB, Expect, Input, log_template, open_check_reopen, options, put};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        0 => raw(&mut input),
        1 => mutated_template(&mut input),
        _ => assembled(&mut input),
    }
});

fn seg_path(base: u64) -> std::path::PathBuf {
    Path::new(DB)
        .join(streamlog::SEGMENTS_DIR)
        .join(segment_file_name(base))
}

fn raw(input: &mut Input<'_>) {
    let split = usize::from(input.u16());
    let two = input.u8() & 1 == 1;
    let bytes = input.rest();
    let storage = SimStorage::new(0);
    if two && split < bytes.len() {
        put(&storage, &seg_path(0), &bytes[..split]);
        put(&storage, &seg_path(split as u64), &bytes[split..]);
    } else {
        put(&storage, &seg_path(0), bytes);
    }
    open_check_reopen(&storage, options, Expect::Consistent);
}

fn mutated_template(input: &mut Input<'_>) {
    let t = log_template();
    let mut files: Vec<(std::path::PathBuf, Vec<u8>)> = t.files.clone();
    let mut changed = false;
    let n = 1 + input.u8() % 8;
    for _ in 0..n {
        let which = usize::from(input.u8()) % files.len();
        let offset = input.u32() as usize;
        let byte = input.u8();
        let f = &mut files[which].1;
        if f.is_empty() {
            continue;
        }
        let at = offset % f.len();
        changed |= f[at] != byte;
        f[at] = byte;
    }
    let cut = input.u8();
    if cut & 1 == 1 {
        // Cut the last segment short (a torn tail).
        let last = files
            .iter_mut()
            .filter(|(p, _)| p.starts_with(streamlog::SEGMENTS_DIR))
            .max_by(|a, b| a.0.cmp(&b.0))
            .expect("template has segments");
        let len = last.1.len();
        let keep = usize::from(input.u16()) % (len + 1);
        changed |= keep != len;
        last.1.truncate(keep);
    }
    let storage = SimStorage::new(0);
    for (p, bytes) in &files {
        put(&storage, &Path::new(DB).join(p), bytes);
    }
    if !changed {
        assert!(open_check_reopen(
            &storage,
            options,
            Expect::Exactly(&t.events)
        ));
        return;
    }
    let store = match streamlog::Store::open_with(DB, options(&storage)) {
        Ok(s) => s,
        Err(_) => return,
    };
    let checked = streamlog_fuzz::check_store(&store, Expect::Consistent);
    let got = checked.events;
    assert!(
        got.len() <= t.events.len() && got[..] == t.events[..got.len()],
        "recovered events are not a prefix of the log's events"
    );
    store.close().expect("close");
    let again = if checked.complete {
        Expect::Exactly(&got)
    } else {
        Expect::Consistent
    };
    open_check_reopen(&storage, options, again);
}

const STREAMS: [&str; 4] = ["a", "b", "c", "stream-with-a-longer-name"];

fn assembled(input: &mut Input<'_>) {
    // Segments as (base, bytes).
    let mut segments: Vec<(u64, Vec<u8>)> = vec![(0, header(0).to_vec())];
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut forged = false;
    let mut prev_frame = 0u64;
    let mut ops = 0;
    while !input.is_empty() && ops < 64 {
        ops += 1;
        let (base, seg) = segments.last_mut().expect("one segment at least");
        let position = *base + seg.len() as u64;
        let op = input.u8();
        match op % 8 {
            0..=3 => {
                let stream = STREAMS[usize::from(input.u8()) % STREAMS.len()];
                let count = 1 + usize::from(input.u8() % 4);
                let lie = input.u8();
                let wm = match input.u8() % 3 {
                    0 => 0,
                    1 => prev_frame,
                    _ => position,
                };
                let payload = input.take(usize::from(input_len(op)));
                let next = versions.entry(stream).or_insert(0);
                let first_version = if lie == 0xFF {
                    forged = true;
                    u64::from(input.u8())
                } else {
                    *next
                };
                *next = first_version + count as u64;
                let ids: Vec<[u8; 16]> = (0..count).map(|i| [i as u8 + 1; 16]).collect();
                let events: Vec<EventRecord<'_>> = ids
                    .iter()
                    .map(|id| EventRecord {
                        id: *id,
                        timestamp_us: 1_700_000_000_000_000,
                        schema_version: 0,
                        event_type: "T",
                        metadata: b"",
                        data: payload,
                    })
                    .collect();
                let start = seg.len();
                let frame = format::EventsFrame {
                    committed_at_us: Some(1_700_000_000_000_000),
                    stream,
                    first_version,
                    events: &events,
                    checkpoint: None,
                };
                format::encode_events_frame(seg, position, wm, &frame);
                if lie == 0xFE {
                    // A malformed body under a valid CRC.
                    forged = true;
                    let at = start + 32 + usize::from(input.u8()) % (seg.len() - start - 32);
                    seg[at] ^= 1 << (input.u8() % 8);
                    let crc = crc32fast::hash(&seg[start + 12..]);
                    seg[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
                }
                prev_frame = position;
            }
            4 => {
                format::encode_checkpoint_frame(seg, position, position);
                prev_frame = position;
            }
            5 => {
                let n = usize::from(input.u8() % 64);
                seg.extend_from_slice(input.take(n));
            }
            6 => {
                let n = usize::from(input.u16() % 600);
                seg.resize(seg.len() + n, 0);
            }
            _ => {
                let base = position;
                let h = if input.u8() == 0xFF {
                    let mut h = header(base);
                    h[usize::from(input.u8()) % SEGMENT_HEADER_LEN] ^= 0x20;
                    h
                } else {
                    header(base)
                };
                segments.push((base, h.to_vec()));
            }
        }
    }
    if input.u8() & 1 == 1 {
        let (_, last) = segments.last_mut().expect("one segment at least");
        let keep = usize::from(input.u16()) % (last.len() + 1);
        last.truncate(keep);
    }
    let storage = SimStorage::new(0);
    storage
        .create_dir_all(&Path::new(DB).join(streamlog::SEGMENTS_DIR))
        .expect("dir");
    for (base, bytes) in &segments {
        put(&storage, &seg_path(*base), bytes);
    }
    let expect = if forged {
        Expect::Forged
    } else {
        Expect::Consistent
    };
    open_check_reopen(&storage, options, expect);
}

fn input_len(op: u8) -> u8 {
    // Payload sizes: mostly small, sometimes up to 255 bytes.
    if op & 0x80 != 0 { 255 } else { op >> 3 }
}

fn header(base: u64) -> [u8; SEGMENT_HEADER_LEN] {
    format::encode_segment_header(&SegmentHeader {
        version: format::FORMAT_VERSION,
        kind: SEGMENT_KIND_EVENTS,
        base_position: base,
    })
}
