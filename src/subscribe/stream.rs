//! Subscriptions for async code (feature `tokio`): a [`SubscriptionStream`] is a
//! `futures_core::Stream` of deliveries.
//!
//! A subscription blocks while it waits for commits, so the stream runs it on a thread of
//! its own and hands deliveries over through a small bounded channel: a consumer that is
//! slow to poll holds that thread up (it reads on from where it is, later), and no queue
//! grows. The other blocking calls of the store (appends under `Sync` wait for their
//! fsync; reads and loads do I/O) belong in `tokio::task::spawn_blocking` in async code;
//! `Store` is `Clone`, so a task can take its own handle along.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use super::{Delivery, Subscription};
use crate::error::{Error, Result};

/// Deliveries a [`SubscriptionStream`] reads ahead of its consumer at most.
const CHANNEL_CAPACITY: usize = 16;

/// A subscription as a `futures_core::Stream` (see the module docs). Dropping it stops its
/// reading thread within 100 ms.
#[derive(Debug)]
pub struct SubscriptionStream {
    rx: tokio::sync::mpsc::Receiver<Result<Delivery>>,
    stop: Arc<AtomicBool>,
}

impl Subscription {
    /// This subscription as a `futures_core::Stream`, read on a thread of its own.
    ///
    /// # Errors
    /// [`Error::Io`] when the thread cannot be started.
    pub fn into_stream(mut self) -> Result<SubscriptionStream> {
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("streamlog-subscription".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    let item = match self.next_timeout(Duration::from_millis(100)) {
                        Ok(Some(d)) => Ok(d),
                        Ok(None) if self.failed || self.store.is_closed() => return,
                        Ok(None) => continue,
                        Err(e) => Err(e),
                    };
                    let failed = item.is_err();
                    if tx.blocking_send(item).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("start a subscription thread", e))?;
        Ok(SubscriptionStream { rx, stop })
    }
}

impl futures_core::Stream for SubscriptionStream {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for SubscriptionStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
