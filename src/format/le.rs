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
}
