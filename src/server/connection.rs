//! The server's side of a client connection: a TCP stream (plain, or under TLS) that
//! acknowledges what it reads at once.
//!
//! Clients that leave Nagle's algorithm on (the official Rust client does) send the frames
//! of a client-streaming call (an append: headers, then messages, then the end of the
//! stream) one acknowledgement apart; with the kernel's delayed acknowledgements that is
//! about 40 ms an append, whatever the server does. Re-arming `TCP_QUICKACK` after each
//! read (Linux turns it off by itself) makes those acknowledgements immediate.

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
            _open: open,
        }
    }

    /// A connection whose TLS handshake is done.
    pub(super) fn tls(stream: TlsStream<TcpStream>, open: Open) -> Self {
        Connection {
            io: Io::Tls(Box::new(stream)),
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
        let polled = match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if let Poll::Ready(Ok(())) = polled {
            self.acknowledge_at_once();
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
