//! A walk over a TIFF file's directories before any TIFF reader sees it: every tag's claimed
//! values must lie within the file, and text tags are bounded, so that no reader is asked to
//! allocate what the file does not hold (and the `tiff` crate's debug print on an oversized text
//! tag is never reached). It reads only the directory entries, by seeking.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

use super::read_up_to;

/// The longest text (ASCII) tag accepted, in bytes.
pub const MAX_TEXT_TAG: u64 = 16 << 20;
/// The most directories (pages) walked.
const MAX_DIRECTORIES: usize = 1024;
/// The most entries one directory may have.
const MAX_ENTRIES: u64 = 4096;

/// Bytes per value of a TIFF field type (unknown types count one byte each).
fn type_size(t: u16) -> u64 {
    match t {
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 | 16 | 17 | 18 => 8,
        _ => 1,
    }
}

/// Checks the directories of the TIFF in `r` (of `len` bytes); the error says which tag claims
/// what.
pub fn check<R: Read + Seek>(r: &mut R, len: u64) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot read the TIFF directories: {e}");
    let mut head = [0u8; 16];
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let got = read_up_to(r, &mut head).map_err(io)?;
    if got < 8 {
        return Err("the TIFF header is cut short".into());
    }
    let little = match &head[..2] {
        b"II" => true,
        b"MM" => false,
        _ => return Err("not a TIFF header".into()),
    };
    let u16_at = |b: &[u8]| if little { u16::from_le_bytes([b[0], b[1]]) } else { u16::from_be_bytes([b[0], b[1]]) };
    let u32_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if little { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
    };
    let u64_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if little { u64::from_le_bytes(a) } else { u64::from_be_bytes(a) }
    };
    let big = match u16_at(&head[2..4]) {
        42 => false,
        43 if got >= 16 => true,
        v => return Err(format!("an unknown TIFF version {v}")),
    };
    let mut next = if big { u64_at(&head[8..16]) } else { u32_at(&head[4..8]) as u64 };
    let (count_size, entry_size, offset_size) = if big { (8, 20, 8) } else { (2, 12, 4) };
    let mut seen = HashSet::new();
    while next != 0 {
        if seen.len() >= MAX_DIRECTORIES {
            return Err(format!("the TIFF has more than {MAX_DIRECTORIES} directories"));
        }
        if !seen.insert(next) {
            return Err("the TIFF's directories form a loop".into());
        }
        if next.saturating_add(count_size) > len {
            return Err(format!(
                "cannot read the TIFF: a directory at byte {next} lies beyond its {len} bytes (cut short?)"
            ));
        }
        r.seek(SeekFrom::Start(next)).map_err(io)?;
        let mut b = [0u8; 8];
        r.read_exact(&mut b[..count_size as usize]).map_err(io)?;
        let entries = if big { u64_at(&b) } else { u16_at(&b) as u64 };
        if entries > MAX_ENTRIES {
            return Err(format!("a TIFF directory claims {entries} tags, more than {MAX_ENTRIES}"));
        }
        let table = entries * entry_size + offset_size;
        if next + count_size + table > len {
            return Err(format!("cannot read the TIFF: a directory of {entries} tags runs past its end (cut short?)"));
        }
        let mut raw = vec![0u8; table as usize];
        r.read_exact(&mut raw).map_err(io)?;
        for e in raw[..(entries * entry_size) as usize].chunks_exact(entry_size as usize) {
            let (tag, kind) = (u16_at(&e[0..2]), u16_at(&e[2..4]));
            let count = if big { u64_at(&e[4..12]) } else { u32_at(&e[4..8]) as u64 };
            let bytes = count.saturating_mul(type_size(kind));
            if bytes > len {
                return Err(format!("a TIFF tag ({tag}) claims {bytes} bytes of values, more than the file's {len}"));
            }
            if kind == 2 && bytes > MAX_TEXT_TAG {
                return Err(format!("a TIFF text tag ({tag}) of {bytes} bytes, more than {MAX_TEXT_TAG} are read"));
            }
        }
        let tail = &raw[(entries * entry_size) as usize..];
        next = if big { u64_at(tail) } else { u32_at(tail) as u64 };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A little-endian TIFF with one directory of `entries` (tag, type, count, value).
    fn tiff(entries: &[(u16, u16, u32, u32)]) -> Vec<u8> {
        let mut b = b"II*\0".to_vec();
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, kind, count, value) in entries {
            b.extend_from_slice(&tag.to_le_bytes());
            b.extend_from_slice(&kind.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            b.extend_from_slice(&value.to_le_bytes());
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        b.resize(b.len() + 64, 0);
        b
    }

    fn run(b: &[u8]) -> Result<(), String> {
        check(&mut Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn claims_beyond_the_file_are_refused() {
        assert!(run(&tiff(&[(256, 3, 1, 7), (270, 2, 10, 20)])).is_ok());
        let e = run(&tiff(&[(270, 2, 4_000_000_000, 20)])).unwrap_err();
        assert!(e.contains("tag (270) claims 4000000000 bytes"), "{e}");
        let e = run(&tiff(&[(273, 16, 1 << 30, 20)])).unwrap_err();
        assert!(e.contains("tag (273)"), "{e}");
        // A directory pointing at itself, one beyond the end, a cut header.
        let mut looped = tiff(&[(256, 3, 1, 7)]);
        let at = 8 + 2 + 12;
        looped[at..at + 4].copy_from_slice(&8u32.to_le_bytes());
        assert!(run(&looped).unwrap_err().contains("loop"));
        let mut far = tiff(&[]);
        far[4..8].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(run(&far).unwrap_err().contains("beyond"));
        assert!(run(b"II*\0").is_err());
    }

    #[test]
    fn text_tags_are_bounded() {
        let mut big = tiff(&[(270, 2, (MAX_TEXT_TAG + 1) as u32, 20)]);
        big.resize(MAX_TEXT_TAG as usize + 100, 0);
        assert!(run(&big).unwrap_err().contains("text tag (270)"));
    }
}
