//! A link of one of two kinds, chosen at run time: a rank whose previous rank lives in this
//! process and whose next one does not reads a pipe and writes a socket. The driver is generic
//! over its sources and sinks; this lets one driver take either kind on each side.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::driver::{FrameSink, FrameSource, Payload, Shared};
use crate::frame::FrameHeader;

/// `Pipe` for an in-process link, `Net` for a socket (TCP or QUIC).
pub(crate) enum Either<P, N> {
    /// An in-process pipe ([`crate::local_link`]).
    Pipe(P),
    /// A network stream.
    Net(N),
}

impl<P: FrameSource, N: FrameSource> FrameSource for Either<P, N> {
    fn places(&self) -> bool {
        match self {
            Either::Pipe(p) => p.places(),
            Either::Net(n) => n.places(),
        }
    }

    async fn next_frame(&mut self, max: u32, shared: &Shared) -> Result<Option<(FrameHeader, Payload)>, String> {
        match self {
            Either::Pipe(p) => p.next_frame(max, shared).await,
            Either::Net(n) => n.next_frame(max, shared).await,
        }
    }
}

impl<P: AsyncRead + Unpin, N: AsyncRead + Unpin> AsyncRead for Either<P, N> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Either::Pipe(p) => Pin::new(p).poll_read(cx, buf),
            Either::Net(n) => Pin::new(n).poll_read(cx, buf),
        }
    }
}

impl<P: AsyncWrite + Unpin, N: AsyncWrite + Unpin> AsyncWrite for Either<P, N> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Either::Pipe(p) => Pin::new(p).poll_write(cx, buf),
            Either::Net(n) => Pin::new(n).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Either::Pipe(p) => Pin::new(p).poll_write_vectored(cx, bufs),
            Either::Net(n) => Pin::new(n).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Either::Pipe(p) => p.is_write_vectored(),
            Either::Net(n) => n.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Either::Pipe(p) => Pin::new(p).poll_flush(cx),
            Either::Net(n) => Pin::new(n).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Either::Pipe(p) => Pin::new(p).poll_shutdown(cx),
            Either::Net(n) => Pin::new(n).poll_shutdown(cx),
        }
    }
}

impl<P: FrameSink, N: FrameSink> FrameSink for Either<P, N> {
    fn takes_owned(&self) -> bool {
        match self {
            Either::Pipe(p) => p.takes_owned(),
            Either::Net(n) => n.takes_owned(),
        }
    }

    async fn write_owned(&mut self, header: &[u8], payload: Vec<f32>) -> std::io::Result<()> {
        match self {
            Either::Pipe(p) => p.write_owned(header, payload).await,
            Either::Net(n) => n.write_owned(header, payload).await,
        }
    }

    async fn write_pieces(&mut self, header: &[u8], pieces: Vec<bytes::Bytes>) -> std::io::Result<()> {
        match self {
            Either::Pipe(p) => p.write_pieces(header, pieces).await,
            Either::Net(n) => n.write_pieces(header, pieces).await,
        }
    }
}
