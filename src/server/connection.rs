//! The server's side of a client connection: a TCP stream that acknowledges what it reads
//! at once.
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
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection (see the module docs).
#[derive(Debug)]
pub(super) struct Connection(TcpStream);

impl Connection {
    /// Wraps an accepted stream, with Nagle's algorithm off for the server's own writes.
    pub(super) fn new(stream: TcpStream) -> Self {
        // A failure leaves the defaults: slower, still correct.
        let _ = stream.set_nodelay(true);
        Connection(stream)
    }

    fn acknowledge_at_once(&self) {
        #[cfg(target_os = "linux")]
        {
            let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
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
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}
