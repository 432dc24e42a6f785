//! TCP proxy statistics per (direction, cluster): connections opened and open, bytes each way.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Direction;

/// Counters of one TCP proxy cluster in one direction.
#[derive(Debug, Default)]
pub(crate) struct TcpStats {
    opened: AtomicU64,
    closed: AtomicU64,
    /// Bytes read from clients (sent on to the upstream).
    received: AtomicU64,
    /// Bytes read from upstreams (sent on to the client).
    sent: AtomicU64,
}

impl TcpStats {
    /// Counts a connection as open until the guard drops.
    pub(crate) fn open(&self) -> OpenConnection<'_> {
        self.opened.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    /// `io` (the client's side), counting bytes as they are read from it.
    pub(crate) fn downstream<'a, I>(&'a self, io: &'a mut I) -> CountingIo<'a, I> {
        CountingIo {
            io,
            read: &self.received,
        }
    }

    /// `io` (the upstream's side), counting bytes as they are read from it.
    pub(crate) fn upstream<'a, I>(&'a self, io: &'a mut I) -> CountingIo<'a, I> {
        CountingIo {
            io,
            read: &self.sent,
        }
    }
}

/// An open TCP connection of a [`TcpStats`]; dropping it closes it.
#[derive(Debug)]
pub(crate) struct OpenConnection<'a>(&'a TcpStats);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A stream whose reads add to a byte counter as they happen (not only when it closes).
#[derive(Debug)]
pub(crate) struct CountingIo<'a, I> {
    io: &'a mut I,
    read: &'a AtomicU64,
}

impl<I: AsyncRead + Unpin> AsyncRead for CountingIo<'_, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.read.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CountingIo<'_, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

/// Every TCP stats handle ever created; locked when compiling config and when scraping.
#[derive(Debug, Default)]
pub(crate) struct TcpStatsSet {
    handles: Mutex<BTreeMap<(Direction, String), Arc<TcpStats>>>,
}

impl TcpStatsSet {
    pub(crate) fn handle(&self, direction: Direction, cluster: &str) -> Arc<TcpStats> {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        handles
            .entry((direction, cluster.to_owned()))
            .or_default()
            .clone()
    }
}

impl Collector for TcpStatsSet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<(Direction, String, [u64; 4])> = {
            let handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
            handles
                .iter()
                .map(|((d, c), s)| {
                    let values = [&s.opened, &s.closed, &s.received, &s.sent]
                        .map(|n| n.load(Ordering::Relaxed));
                    (*d, c.clone(), values)
                })
                .filter(|(_, _, [opened, ..])| *opened > 0)
                .collect()
        };
        // Name, help, type, and which of [opened, open, received, sent] it reports.
        let metrics: [(&str, &str, MetricType, usize); 4] = [
            (
                "trellis_tcp_connections",
                "TCP connections proxied, by direction and cluster",
                MetricType::Counter,
                0,
            ),
            (
                "trellis_tcp_open_connections",
                "TCP connections open now",
                MetricType::Gauge,
                1,
            ),
            (
                "trellis_tcp_received_bytes",
                "Bytes received from TCP clients",
                MetricType::Counter,
                2,
            ),
            (
                "trellis_tcp_sent_bytes",
                "Bytes sent to TCP clients",
                MetricType::Counter,
                3,
            ),
        ];
        for (name, help, kind, column) in metrics {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (direction, cluster, [opened, closed, received, sent]) in &rows {
                let value = [*opened, opened - closed, *received, *sent][column];
                let labels = [("direction", direction.as_str()), ("cluster", cluster)];
                let mut metric = family.encode_family(&labels)?;
                match kind {
                    MetricType::Gauge => metric.encode_gauge(&value)?,
                    _ => metric.encode_counter::<[(&str, &str); 0], _, f64>(&value, None)?,
                }
            }
        }
        Ok(())
    }
}
