//! The server's side of a client connection: a TCP stream (plain, or under TLS) that
//! acknowledges what it reads at once.
//!
//! Clients that leave Nagle's algorithm on (the official Rust client does) send the frames
//! of a client-streaming call (an append: headers, then messages, then the end of the
//! stream) one acknowledgement apart; with the kernel's delayed acknowledgements that is
//! about 40 ms an append, whatever the server does. Re-arming `TCP_QUICKACK` (Linux turns
//! it off by itself) makes those acknowledgements immediate.
//!
//! Only while a client is still sending a call, though: the re-arm is a system call, and it
//! sends the pending acknowledgement at once as a packet of its own. After a read that
//! ends every call's request (its `END_STREAM`), the client waits for an answer, not for
//! an acknowledgement, and the answer carries it. So the connection follows the HTTP/2
//! frame headers it reads ([`Requests`]): which streams the client opened and has not
//! ended yet. With 64 clients appending one event a call, the re-arm after every read
//! cost the server about a fifth of its CPU (docs/benchmarks.md §20).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::metrics::Open;

/// An accepted connection (see the module docs), plain or TLS, counted in the metrics
/// while it is open.
#[derive(Debug)]
pub(super) struct Connection {
    io: Io,
    requests: Requests,
    _open: Open,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Sets an accepted stream up: Nagle's algorithm off for the server's own writes.
pub(super) fn prepare(stream: &TcpStream) {
    // A failure leaves the defaults: slower, still correct.
    let _ = stream.set_nodelay(true);
}

impl Connection {
    /// A plain HTTP/2 connection.
    pub(super) fn plain(stream: TcpStream, open: Open) -> Self {
        Connection {
            io: Io::Plain(stream),
            requests: Requests::default(),
            _open: open,
        }
    }

    /// A connection whose TLS handshake is done.
    pub(super) fn tls(stream: TlsStream<TcpStream>, open: Open) -> Self {
        Connection {
            io: Io::Tls(Box::new(stream)),
            requests: Requests::default(),
            _open: open,
        }
    }

    fn tcp(&self) -> &TcpStream {
        match &self.io {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }

    fn acknowledge_at_once(&self) {
        #[cfg(target_os = "linux")]
        {
            let _ = socket2::SockRef::from(self.tcp()).set_tcp_quickack(true);
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().get(before..).unwrap_or_default();
            if self.requests.read(read) {
                self.acknowledge_at_once();
            }
        }
        polled
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

/// The client's preface, before its first frame (RFC 9113, section 3.4).
const PREFACE_BYTES: usize = 24;
/// Bytes of an HTTP/2 frame header: length (24 bits), type, flags, stream id (31 bits).
const FRAME_HEADER_BYTES: usize = 9;
/// Streams followed at once; past this the connection acknowledges every read, as if every
/// stream were open (the server's own limit of concurrent streams is lower by default).
const MAX_FOLLOWED_STREAMS: usize = 1024;

const FRAME_DATA: u8 = 0x0;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FLAG_END_STREAM: u8 = 0x1;

/// What a connection has read of its client's requests: only the HTTP/2 frame headers,
/// to know which streams the client has opened and not ended (it is still sending
/// them). The HTTP/2 codec parses and checks everything; a stream this misjudges costs an
/// acknowledgement sent at once, or one delayed as the kernel does by default, never a
/// wrong answer.
#[derive(Debug, Default)]
pub(super) struct Requests {
    /// Bytes of the preface read so far.
    preface_seen: usize,
    /// The frame header being read, and how many of its bytes are in.
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    /// Bytes of the current frame's payload still to skip.
    payload_left: usize,
    /// Streams the client opened and has not ended.
    open: Vec<u32>,
    /// More streams open at once than are followed: acknowledge every read.
    overflowed: bool,
}

impl Requests {
    /// Follows the bytes of one read; returns whether the client may still be sending (a
    /// stream it has not ended, or a frame not read whole), which is when an
    /// acknowledgement should go at once.
    pub(super) fn read(&mut self, mut bytes: &[u8]) -> bool {
        if self.preface_seen < PREFACE_BYTES {
            let skip = (PREFACE_BYTES - self.preface_seen).min(bytes.len());
            self.preface_seen += skip;
            bytes = bytes.get(skip..).unwrap_or_default();
        }
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len());
                self.payload_left -= skip;
                bytes = bytes.get(skip..).unwrap_or_default();
                continue;
            }
            let take = (FRAME_HEADER_BYTES - self.header_len).min(bytes.len());
            if let (Some(to), Some(from)) = (
                self.header.get_mut(self.header_len..self.header_len + take),
                bytes.get(..take),
            ) {
                to.copy_from_slice(from);
            }
            self.header_len += take;
            bytes = bytes.get(take..).unwrap_or_default();
            if self.header_len == FRAME_HEADER_BYTES {
                self.header_len = 0;
                self.frame();
            }
        }
        self.overflowed
            || !self.open.is_empty()
            || self.header_len > 0
            || self.payload_left > 0
            || self.preface_seen < PREFACE_BYTES
    }

    /// One whole frame header, in `self.header`.
    fn frame(&mut self) {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = self.header;
        self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        // HTTP/2 numbers are big-endian (network order).
        let stream =
            u32::from(s0 & 0x7f) << 24 | u32::from(s1) << 16 | u32::from(s2) << 8 | u32::from(s3);
        let ends = flags & FLAG_END_STREAM != 0;
        match kind {
            FRAME_HEADERS if !ends && !self.open.contains(&stream) => {
                if self.open.len() >= MAX_FOLLOWED_STREAMS {
                    self.overflowed = true;
                } else {
                    self.open.push(stream);
                }
            }
            // Trailers or a repeated HEADERS frame of a stream already open.
            FRAME_HEADERS if !ends => {}
            FRAME_HEADERS | FRAME_DATA if ends => self.close(stream),
            FRAME_RST_STREAM => self.close(stream),
            _ => {}
        }
    }

    fn close(&mut self, stream: u32) {
        if let Some(i) = self.open.iter().position(|s| *s == stream) {
            self.open.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let byte = |n: usize, shift: u32| u8::try_from((n >> shift) & 0xff).unwrap_or(0);
        let s = usize::try_from(stream).unwrap_or(0);
        let mut f = vec![
            byte(payload, 16),
            byte(payload, 8),
            byte(payload, 0),
            kind,
            flags,
        ];
        f.extend([byte(s, 24), byte(s, 16), byte(s, 8), byte(s, 0)]);
        f.resize(FRAME_HEADER_BYTES + payload, 0xAB);
        f
    }

    fn preface() -> Vec<u8> {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    }

    #[test]
    fn acknowledges_at_once_only_while_a_request_is_still_coming() {
        let mut r = Requests::default();
        // The preface and the client's SETTINGS: no request open.
        let mut bytes = preface();
        bytes.extend(frame(0x4, 0, 0, 12));
        assert!(!r.read(&bytes));
        // An append: headers, then its messages, then the end of its stream.
        assert!(r.read(&frame(FRAME_HEADERS, 0x4, 1, 40)));
        assert!(r.read(&frame(FRAME_DATA, 0, 1, 30)));
        assert!(!r.read(&frame(FRAME_DATA, FLAG_END_STREAM, 1, 0)));
        // A call whose request is one HEADERS frame that ends its stream.
        assert!(!r.read(&frame(FRAME_HEADERS, FLAG_END_STREAM | 0x4, 3, 20)));
        // A stream reset by the client is no longer open.
        assert!(r.read(&frame(FRAME_HEADERS, 0x4, 5, 20)));
        assert!(!r.read(&frame(FRAME_RST_STREAM, 0, 5, 4)));
    }

    #[test]
    fn follows_frames_split_across_reads_at_any_byte() {
        let mut bytes = preface();
        bytes.extend(frame(FRAME_HEADERS, 0x4, 1, 300));
        bytes.extend(frame(FRAME_DATA, 0, 1, 70_000));
        bytes.extend(frame(FRAME_HEADERS, 0x4, 3, 10));
        bytes.extend(frame(FRAME_DATA, FLAG_END_STREAM, 1, 5));
        bytes.extend(frame(FRAME_DATA, FLAG_END_STREAM, 3, 0));
        for chunk in [1, 2, 7, 9, 10, 4096] {
            let mut r = Requests::default();
            let mut still_coming = true;
            for piece in bytes.chunks(chunk) {
                still_coming = r.read(piece);
            }
            assert!(!still_coming, "in pieces of {chunk} bytes");
            assert!(r.open.is_empty());
        }
        // Cut inside the last frame: still coming.
        let mut r = Requests::default();
        assert!(r.read(bytes.get(..bytes.len() - 3).unwrap_or_default()));
    }

    #[test]
    fn too_many_open_streams_acknowledge_every_read() {
        let mut r = Requests::default();
        r.read(&preface());
        for s in 0..=u32::try_from(MAX_FOLLOWED_STREAMS).unwrap_or(0) {
            r.read(&frame(FRAME_HEADERS, 0x4, 2 * s + 1, 0));
        }
        for s in 0..=u32::try_from(MAX_FOLLOWED_STREAMS).unwrap_or(0) {
            r.read(&frame(FRAME_DATA, FLAG_END_STREAM, 2 * s + 1, 0));
        }
        assert!(r.read(&frame(0x4, 0, 0, 0)));
    }
}
