//! Rewritten segments (`streamlog::format::compact`, formats 3 to 6) on arbitrary bytes:
//! decoding the footer, the dictionary, the block map (fixed-size records, or packed
//! since format 6) and removed runs, block headers and blocks (stored, zstd, or zstd with the segment's dictionary), and finding frames in a
//! decoded block never panics; and a segment written by `CompactWriter` from arbitrary
//! frames (stored, or compressed with a dictionary sampled from them) decodes back to the
//! same frames at the same positions.
//!
//! Input: one mode byte, then the bytes. Mode bit 0 set: the bytes are a whole file to
//! decode (the harness fixes the footer's CRC, and the dictionary's when the footer
//! declares one, so the checks behind them are reached). Clear: the bytes are split into
//! payloads of frames that are written and read back; mode bit 1 picks compression with a
//! dictionary, bit 2 format 5 (block headers) instead of this build's, and bits 3.. the
//! block target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamlog::format::compact::{
    self, CompactWriter, Dictionary, DictionarySampler, FOOTER_LEN, decode_block_at,
    decode_footer, decode_tables,
};
use streamlog::format::{EventRecord, EventsFrame, encode_events_frame};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        compact::decode_forged(rest.to_vec());
    } else {
        round_trip(rest, mode >> 1);
    }
});

fn round_trip(bytes: &[u8], mode: u8) {
    let compress = mode % 2 == 1;
    let version = if (mode >> 1) % 2 == 1 {
        5
    } else {
        streamlog::format::FORMAT_VERSION
    };
    let block_target = 1 + usize::from(mode >> 2) * 64;
    let mut position = 32u64;
    let mut kept = Vec::new();
    for (i, payload) in bytes.chunks(37).enumerate() {
        let e = EventRecord {
            id: [i as u8; 16],
            timestamp_us: i as i64,
            schema_version: 0,
            event_type: "T",
            metadata: b"",
            data: payload,
        };
        let mut frame = Vec::new();
        encode_events_frame(
            &mut frame,
            position,
            0,
            &EventsFrame {
                committed_at_us: Some(1),
                stream: "s",
                first_version: i as u64,
                events: std::slice::from_ref(&e),
                checkpoint: None,
            },
        );
        // Every third frame is "removed": the positions skip it.
        if i % 3 != 2 {
            kept.push((position, frame.clone()));
        }
        position += frame.len() as u64;
    }
    let dictionary_bytes = compress.then(|| {
        let mut sampler = DictionarySampler::new(32, position);
        for (p, f) in &kept {
            sampler.offer(*p, f);
        }
        sampler.finish(1)
    });
    let new_writer = || match &dictionary_bytes {
        Some(d) => CompactWriter::with_dictionary(0, version, 1, d, block_target),
        None => CompactWriter::new(0, version),
    };
    let mut writer = new_writer();
    for (p, f) in &kept {
        writer.push_frame(*p, f);
    }
    let file = writer.finish(position, &[]);
    // The blocks compressed on several threads are the same bytes.
    let mut parallel = new_writer();
    parallel.push_frames_parallel(&kept, 3);
    assert!(parallel.finish(position, &[]) == file, "parallel blocks differ");
    let len = file.len();
    let footer =
        decode_footer(&file[len - FOOTER_LEN..], 0, len as u64, version).expect("footer");
    let (blocks, _) = decode_tables(
        &file[footer.map_offset as usize..len - FOOTER_LEN],
        &footer,
        0,
    )
    .expect("tables");
    let dictionary = (footer.dictionary_len > 0).then(|| {
        Dictionary::decode(&file[32..32 + footer.dictionary_len as usize], &footer)
            .expect("dictionary")
    });
    let mut found = Vec::new();
    for b in blocks {
        let raw = decode_block_at(&b, &file[b.file_offset as usize..], dictionary.as_ref())
            .expect("block");
        for (p, off) in compact::block_positions(&raw, b.first_position).expect("frames") {
            let flen = kept
                .iter()
                .find(|(q, _)| *q == p)
                .expect("a kept frame")
                .1
                .len();
            found.push((p, raw[off..off + flen].to_vec()));
        }
    }
    assert_eq!(found, kept);
}
