//! Appends of a single-node server, gathered into groups: one thread (the gatherer) takes
//! the appends that calls have queued and encodes each group with
//! [`Store::append_many_pending`] (one hold of the writer's lock), another (the syncer)
//! waits for the groups' commit in the order they were encoded and answers them.
//!
//! Before, each call ran its append on a thread of tokio's blocking pool: a thread hand-off
//! there and back per append, and under `Sync` every appender queueing for the writer's
//! lock and then for the group commit, each woken on its own. With many clients those
//! wake-ups, not the disk, were most of the server's work (docs/design.md, "The server's
//! appends"). Then two threads each took a group and waited for its own commit: the second
//! took what little had come since the first took its group, and waited for the first's
//! sync before its own. Now the gatherer never waits for a sync: while one runs, it
//! encodes whatever arrives, and the next sync covers all of it, so the syncs run back to
//! back and each carries every append that came during the one before.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tonic::Status;

use super::convert;
use crate::{
    AppendRequest, AppendResult, Error, EventRef, ExpectedVersion, NewEvent, PendingAppends, Store,
};

/// Most appends in one group.
const MAX_GROUP_APPENDS: usize = 512;
/// A group takes no more appends once its events hold this many bytes.
const MAX_GROUP_BYTES: usize = 8 << 20;

/// One append's answer: its own result, or the status of a group that failed as a whole
/// (the store poisoned or closed, a failed sync).
pub(super) type Answer = Result<Result<AppendResult, Error>, Status>;

struct Job {
    stream: String,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    bytes: usize,
    answer: oneshot::Sender<Answer>,
}

enum Message {
    Append(Job),
    Stop,
}

/// The queue of a server's appends and the threads that append them.
#[derive(Debug, Clone)]
pub(super) struct Appender {
    queue: mpsc::Sender<Message>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// A group the gatherer encoded, on its way to the syncer: its calls, and the store's
/// pending appends (or the error that refused the whole group).
enum Encoded {
    Group(Vec<oneshot::Sender<Answer>>, crate::Result<PendingAppends>),
    Stop,
}

impl Appender {
    /// Starts the threads that append to `store`.
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub(super) fn start(store: &Store) -> std::io::Result<Appender> {
        let (queue, jobs) = mpsc::channel();
        let (encoded, to_sync) = mpsc::channel();
        let syncer = std::thread::Builder::new()
            .name("streamlog-append-sync".into())
            .spawn(move || sync(&to_sync))?;
        let gatherer = {
            let store = store.clone();
            std::thread::Builder::new()
                .name("streamlog-append-gather".into())
                .spawn(move || gather(&store, &jobs, &encoded))
        };
        let gatherer = match gatherer {
            Ok(t) => t,
            Err(e) => {
                // The syncer ends when its sender (dropped with the closure) is gone.
                let _ = syncer.join();
                return Err(e);
            }
        };
        Ok(Appender {
            queue,
            // The gatherer first: it tells the syncer to stop once it has handed over
            // what it took.
            threads: Arc::new(Mutex::new(vec![gatherer, syncer])),
        })
    }

    /// Appends `events` (holding `bytes` of data and metadata, which bound a group) to
    /// `stream` in the next group, and waits for the answer.
    pub(super) async fn append(
        &self,
        stream: String,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        bytes: usize,
    ) -> Answer {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            stream,
            expected,
            events,
            bytes,
            answer,
        };
        if self.queue.send(Message::Append(job)).is_err() {
            return Err(stopping());
        }
        answered.await.unwrap_or_else(|_| Err(stopping()))
    }

    /// Stops the threads once they have answered what they hold, and waits for them, so
    /// that they no longer hold the store when this returns. Appends queued after this are
    /// answered UNAVAILABLE.
    pub(super) fn stop(&self) {
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
        if !threads.is_empty() {
            let _ = self.queue.send(Message::Stop);
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

fn stopping() -> Status {
    Status::unavailable("the server is stopping; retry the append on its next start")
}

/// The gatherer's loop: take the queued appends (up to a group's bounds), encode them,
/// hand them to the syncer; never wait for a commit.
fn gather(store: &Store, jobs: &mpsc::Receiver<Message>, encoded: &mpsc::Sender<Encoded>) {
    loop {
        let mut group = Vec::new();
        let mut stop = false;
        let mut bytes = 0usize;
        let mut next = jobs.recv().ok();
        if next.is_none() {
            // Every sender is gone.
            stop = true;
        }
        while let Some(message) = next {
            match message {
                Message::Append(job) => {
                    bytes = bytes.saturating_add(job.bytes);
                    group.push(job);
                }
                Message::Stop => {
                    stop = true;
                    break;
                }
            }
            if group.len() >= MAX_GROUP_APPENDS || bytes >= MAX_GROUP_BYTES {
                break;
            }
            next = jobs.try_recv().ok();
        }
        if !group.is_empty() {
            let pending = encode_group(store, &group);
            let answers = group.into_iter().map(|j| j.answer).collect();
            let _ = encoded.send(Encoded::Group(answers, pending));
        }
        if stop {
            let _ = encoded.send(Encoded::Stop);
            return;
        }
    }
}

fn encode_group(store: &Store, group: &[Job]) -> crate::Result<PendingAppends> {
    let events: Vec<Vec<EventRef<'_>>> = group
        .iter()
        .map(|j| j.events.iter().map(NewEvent::as_ref).collect())
        .collect();
    let requests: Vec<AppendRequest<'_>> = group
        .iter()
        .zip(&events)
        .map(|(j, events)| AppendRequest {
            stream: &j.stream,
            expected: j.expected,
            events,
        })
        .collect();
    store.append_many_pending(&requests)
}

/// The syncer's loop: wait for each group's commit, in the order the groups were encoded
/// (the first wait's sync covers every group encoded before it began, so the waits after
/// it find their groups durable), and answer its calls.
fn sync(to_sync: &mpsc::Receiver<Encoded>) {
    while let Ok(Encoded::Group(answers, pending)) = to_sync.recv() {
        match pending.and_then(PendingAppends::wait) {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            Err(e) => {
                let status = convert::status(&e);
                for answer in answers {
                    let _ = answer.send(Err(status.clone()));
                }
            }
        }
    }
}
