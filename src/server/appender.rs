//! Appends of a single-node server, gathered into groups: two threads take the appends
//! that calls have queued and hand each group to [`Store::append_many`], one hold of the
//! writer's lock and one commit for all of it.
//!
//! Before, each call ran its append on a thread of tokio's blocking pool: a thread hand-off
//! there and back per append, and under `Sync` every appender queueing for the writer's
//! lock and then for the group commit, each woken on its own. With many clients those
//! wake-ups, not the disk, were most of the server's work (docs/design.md, "The server's
//! appends"). Two threads, so that one gathers and encodes the next group while the other
//! waits for its commit.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tonic::Status;

use super::convert;
use crate::{AppendRequest, AppendResult, Error, EventRef, ExpectedVersion, NewEvent, Store};

/// Most appends in one group.
const MAX_GROUP_APPENDS: usize = 512;
/// A group takes no more appends once its events hold this many bytes.
const MAX_GROUP_BYTES: usize = 8 << 20;
/// Threads that append groups.
const THREADS: usize = 2;

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

impl Appender {
    /// Starts the threads that append to `store`.
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub(super) fn start(store: &Store) -> std::io::Result<Appender> {
        let (queue, jobs) = mpsc::channel();
        let jobs = Arc::new(Mutex::new(jobs));
        let mut threads = Vec::with_capacity(THREADS);
        for i in 0..THREADS {
            let (store, jobs) = (store.clone(), Arc::clone(&jobs));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("streamlog-append-{i}"))
                    .spawn(move || run(&store, &jobs))?,
            );
        }
        Ok(Appender {
            queue,
            threads: Arc::new(Mutex::new(threads)),
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
        for _ in &threads {
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

/// A thread's loop: take the queued appends (up to a group's bounds), append them, answer.
fn run(store: &Store, jobs: &Mutex<mpsc::Receiver<Message>>) {
    loop {
        let mut group = Vec::new();
        let mut stop = false;
        {
            let jobs = jobs.lock();
            let mut bytes = 0usize;
            let mut next = jobs.recv().ok();
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
            if group.is_empty() && !stop {
                // Every sender is gone.
                return;
            }
        }
        append_group(store, group);
        if stop {
            return;
        }
    }
}

fn append_group(store: &Store, group: Vec<Job>) {
    if group.is_empty() {
        return;
    }
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
    let results = store.append_many(&requests);
    drop(requests);
    drop(events);
    match results {
        Ok(results) => {
            for (job, result) in group.into_iter().zip(results) {
                let _ = job.answer.send(Ok(result));
            }
        }
        Err(e) => {
            let status = convert::status(&e);
            for job in group {
                let _ = job.answer.send(Err(status.clone()));
            }
        }
    }
}
