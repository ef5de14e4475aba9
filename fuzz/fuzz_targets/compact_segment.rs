//! Rewritten segments (`streamlog::format::compact`, format 3) on arbitrary bytes: decoding
//! the footer, the block map and removed runs, block headers and blocks (stored or zstd),
//! and finding frames in a decoded block never panics; and a segment written by
//! `CompactWriter` from arbitrary frames decodes back to the same frames at the same
//! positions.
//!
//! Input: one mode byte, then the bytes. Mode bit 0 set: the bytes are a whole file to
//! decode (the harness fixes the footer's CRC so the checks behind it are reached). Clear:
//! the bytes are split into payloads of frames that are written and read back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamlog::format::compact::{
    self, BLOCK_HEADER_LEN, CompactWriter, FOOTER_LEN, decode_block, decode_block_header,
    decode_footer, decode_tables, find_in_block,
};
use streamlog::format::{EventRecord, EventsFrame, encode_events_frame};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        decode_file(rest.to_vec());
    } else {
        round_trip(rest, mode >> 1);
    }
});

fn decode_file(mut bytes: Vec<u8>) {
    let len = bytes.len();
    if len >= FOOTER_LEN {
        let crc = crc32fast::hash(&bytes[len - FOOTER_LEN..len - 4]);
        bytes[len - 4..].copy_from_slice(&crc.to_le_bytes());
    }
    let Some(footer_bytes) = bytes.get(len.saturating_sub(FOOTER_LEN)..) else {
        return;
    };
    let Ok(footer) = decode_footer(footer_bytes, 0, len as u64) else {
        return;
    };
    let Some(tables) = bytes.get(footer.map_offset as usize..len - FOOTER_LEN) else {
        return;
    };
    let Ok((blocks, _removed)) = decode_tables(tables, &footer, 0) else {
        return;
    };
    for b in blocks {
        let start = b.file_offset as usize;
        let Some(header) = bytes.get(start..start + BLOCK_HEADER_LEN) else {
            continue;
        };
        let Ok((codec, stored_len, raw_len, crc)) = decode_block_header(header) else {
            continue;
        };
        let Some(stored) = bytes.get(start + BLOCK_HEADER_LEN..start + BLOCK_HEADER_LEN + stored_len as usize) else {
            continue;
        };
        if let Ok(raw) = decode_block(codec, stored, raw_len, crc) {
            let _ = compact::block_positions(&raw, b.first_position);
            let _ = find_in_block(&raw, b.first_position, b.first_position.wrapping_add(32));
        }
    }
}

fn round_trip(bytes: &[u8], level: u8) {
    let level = if level % 2 == 0 { None } else { Some(1) };
    let mut writer = CompactWriter::new(0, 3, level);
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
            writer.push_frame(position, &frame);
            kept.push((position, frame.clone()));
        }
        position += frame.len() as u64;
    }
    let file = writer.finish(position, &[]);
    let len = file.len();
    let footer = decode_footer(&file[len - FOOTER_LEN..], 0, len as u64).expect("footer");
    let (blocks, _) =
        decode_tables(&file[footer.map_offset as usize..len - FOOTER_LEN], &footer, 0).expect("tables");
    let mut found = Vec::new();
    for b in blocks {
        let start = b.file_offset as usize;
        let (codec, stored_len, raw_len, crc) =
            decode_block_header(&file[start..start + BLOCK_HEADER_LEN]).expect("block header");
        let stored = &file[start + BLOCK_HEADER_LEN..start + BLOCK_HEADER_LEN + stored_len as usize];
        let raw = decode_block(codec, stored, raw_len, crc).expect("block");
        for (p, off) in compact::block_positions(&raw, b.first_position).expect("frames") {
            let flen = kept.iter().find(|(q, _)| *q == p).expect("a kept frame").1.len();
            found.push((p, raw[off..off + flen].to_vec()));
        }
    }
    assert_eq!(found, kept);
}
