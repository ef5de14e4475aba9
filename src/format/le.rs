//! Little-endian reading, the one way every decoder of the crate reads integers: segment
//! headers and frames (`format`), index tables and the index manifest (`index`). A read past
//! the end is [`DecodeError::Truncated`], never a panic.

use super::DecodeError;

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    /// The bytes not read yet.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// A cursor at byte `at` of `bytes` (past the end, every read is truncated).
    pub(crate) fn at(bytes: &'a [u8], at: usize) -> Self {
        Reader {
            rest: bytes.get(at..).unwrap_or_default(),
        }
    }

    /// The next `n` bytes.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.rest.split_at_checked(n) {
            Some((s, rest)) => {
                self.rest = rest;
                Ok(s)
            }
            None => Err(DecodeError::Truncated {
                needed: n as u64,
                available: self.rest.len() as u64,
            }),
        }
    }

    /// The next `N` bytes, as an array.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// An unsigned LEB128 number (7 bits a byte, least significant first, high bit set on
    /// every byte but the last), at most 10 bytes; one that does not fit in a `u64` is
    /// [`DecodeError::Invalid`].
    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..70u32).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7F);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Invalid("varint too large"));
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Invalid("varint too long"))
    }

    /// The next `len` bytes as UTF-8; `what` names the field when they are not.
    pub(crate) fn str(&mut self, len: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::Invalid(what))
    }

    /// Bytes left after the cursor.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }
}

/// The `u32` at byte `at` of `bytes`.
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> Result<u32, DecodeError> {
    Reader::at(bytes, at).u32()
}

/// Appends `value` as an unsigned LEB128 number (what [`Reader::varint`] reads).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_reports_truncation() {
        let bytes = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0302));
        assert_eq!(r.u32(), Ok(0x0706_0504));
        assert_eq!(r.remaining(), 2);
        assert_eq!(
            r.u32(),
            Err(DecodeError::Truncated {
                needed: 4,
                available: 2
            })
        );
        // A failed read consumes nothing.
        assert_eq!(r.take(2), Ok(&[8u8, 9][..]));
        assert_eq!(
            Reader::at(&bytes, 1).u64(),
            Ok(u64::from_le_bytes([2, 3, 4, 5, 6, 7, 8, 9]))
        );
        assert_eq!(u32_at(&bytes, 5), Ok(0x0908_0706));
        assert_eq!(
            u32_at(&bytes, 7),
            Err(DecodeError::Truncated {
                needed: 4,
                available: 2
            })
        );
        assert_eq!(
            u32_at(&bytes, usize::MAX),
            Err(DecodeError::Truncated {
                needed: 4,
                available: 0
            })
        );
    }

    #[test]
    fn varints_round_trip_and_refuse_what_does_not_fit() {
        let values = [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ];
        let mut out = Vec::new();
        for v in values {
            put_varint(&mut out, v);
        }
        // 1 byte below 128, 2 below 16,384, 10 for u64::MAX.
        assert_eq!(out.len(), 1 + 1 + 1 + 2 + 2 + 2 + 3 + 5 + 10);
        let mut r = Reader::new(&out);
        for v in values {
            assert_eq!(r.varint(), Ok(v));
        }
        assert_eq!(r.remaining(), 0);
        // Truncated, too long, and too large for a u64.
        assert!(matches!(
            Reader::new(&[0x80]).varint(),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(Reader::new(&[0xFF; 11]).varint().is_err());
        let mut too_large = vec![0xFF; 9];
        too_large.push(0x02);
        assert_eq!(
            Reader::new(&too_large).varint(),
            Err(DecodeError::Invalid("varint too large"))
        );
    }
}
