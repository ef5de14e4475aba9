//! `Streams.Read`: reads of a stream or of `$all`, both ways, and catch-up then live
//! subscriptions, mapped onto [`Store::read_stream`], [`Store::read_all`],
//! [`Store::subscribe_all`] and [`Store::subscribe_stream`].
//!
//! Reads run on a blocking thread and hand their answers over through a small bounded
//! channel: a slow client holds the reader up instead of growing a queue. Subscriptions
//! use the store's own subscription streams (feature `tokio`), which do the same.

use std::ops::ControlFlow;

use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert;
use super::proto::event_store::client::streams::read_req::options::{
    self, AllOptions, FilterOptions, StreamOptions, all_options, filter_options, stream_options,
};
use super::proto::event_store::client::streams::{ReadReq, ReadResp, read_resp};
use super::streams::{Answers, StreamsService, stopped};
use crate::{
    DEFAULT_CHECKPOINT_EVERY, Delivery, Filter, Position, RecordedEvent, ResumeToken, Store,
    SubscribeAll, SubscribeStream,
};

/// Answers a read or a subscription waits for its client at most this many messages ahead.
const ANSWERS_AHEAD: usize = 32;

/// Events read at once while a backward `$all` read walks back.
const BACKWARD_CHUNK_EVENTS: u32 = 256;

/// How a read answers: what the client asked about ids, and where answers go.
struct Reply {
    tx: mpsc::Sender<Result<ReadResp, Status>>,
    uuid_as_string: bool,
    shutdown: watch::Receiver<bool>,
}

impl Reply {
    /// Sends one answer from a blocking thread; an error ends the read (client gone or
    /// server stopping).
    fn send(&self, content: read_resp::Content) -> Result<(), Status> {
        if *self.shutdown.borrow() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        self.tx
            .blocking_send(Ok(ReadResp {
                content: Some(content),
            }))
            .map_err(|_| Status::cancelled("the client went away"))
    }

    fn event(&self, e: RecordedEvent) -> read_resp::Content {
        event_content(e, self.uuid_as_string)
    }
}

fn event_content(e: RecordedEvent, uuid_as_string: bool) -> read_resp::Content {
    let (commit, _) = convert::event_position(e.position, e.append_index);
    read_resp::Content::Event(read_resp::ReadEvent {
        event: Some(convert::recorded_event(e, uuid_as_string)),
        link: None,
        position: Some(read_resp::read_event::Position::CommitPosition(commit)),
    })
}

/// The filter of a read or subscription of `$all`, and its checkpoint interval.
fn filter(option: Option<options::FilterOption>) -> Result<Option<(Filter, u64)>, Status> {
    let Some(options::FilterOption::Filter(FilterOptions {
        filter,
        window,
        checkpoint_interval_multiplier,
    })) = option
    else {
        return Ok(None);
    };
    let every = match window {
        Some(filter_options::Window::Max(max)) => {
            u64::from(max.max(1)).saturating_mul(u64::from(checkpoint_interval_multiplier.max(1)))
        }
        Some(filter_options::Window::Count(())) | None => DEFAULT_CHECKPOINT_EVERY,
    };
    let (on_stream, expression) = match filter {
        Some(filter_options::Filter::StreamIdentifier(e)) => (true, e),
        Some(filter_options::Filter::EventType(e)) => (false, e),
        None => return Ok(None),
    };
    let bad = |e: crate::Error| Status::invalid_argument(e.to_string());
    let filter = match (expression.prefix.is_empty(), expression.regex.is_empty()) {
        (false, _) if on_stream => Filter::stream_prefixes(expression.prefix),
        (false, _) => Filter::event_type_prefixes(expression.prefix),
        (true, false) if on_stream => Filter::stream_regex(&expression.regex).map_err(bad)?,
        (true, false) => Filter::event_type_regex(&expression.regex).map_err(bad)?,
        (true, true) => {
            return Err(Status::invalid_argument(
                "a filter needs a regular expression or prefixes",
            ));
        }
    };
    Ok(Some((filter, every)))
}

/// What a subscription answers when its node's store was replaced by a snapshot
/// install (a cluster node that fell behind the leader's log): the store it followed
/// never changes again, so it ends and the client subscribes again, to the new store.
const STORE_REPLACED: &str =
    "this node reloaded its store from a snapshot of the leader's; resubscribe";

/// Ends a subscription whose store a snapshot install replaced (on a cluster node);
/// never on a single node.
pub(super) struct StoreWatch {
    #[cfg(feature = "cluster")]
    replaced: Option<crate::cluster::Replaced>,
}

impl StoreWatch {
    /// For a store nothing replaces.
    pub(super) fn never() -> StoreWatch {
        StoreWatch {
            #[cfg(feature = "cluster")]
            replaced: None,
        }
    }

    /// For a cluster node's store, taken with `replaced`.
    #[cfg(feature = "cluster")]
    pub(super) fn cluster(replaced: crate::cluster::Replaced) -> StoreWatch {
        StoreWatch {
            replaced: Some(replaced),
        }
    }

    /// Completes once the store has been replaced; never for a single node's.
    async fn replaced(&mut self) {
        #[cfg(feature = "cluster")]
        if let Some(r) = &mut self.replaced {
            r.wait().await;
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// Starts answering a `Streams.Read` call.
pub(super) async fn read(
    service: &StreamsService,
    request: ReadReq,
) -> Result<Answers<ReadResp>, Status> {
    let options = request
        .options
        .ok_or_else(|| Status::invalid_argument("a read has no options"))?;
    let uuid_as_string = matches!(
        options.uuid_option.and_then(|u| u.content),
        Some(options::uuid_option::Content::String(()))
    );
    let backwards = options.read_direction == options::ReadDirection::Backwards as i32;
    let filter = filter(options.filter_option)?;
    let (tx, rx) = mpsc::channel(ANSWERS_AHEAD);
    let reply = Reply {
        tx,
        uuid_as_string,
        shutdown: service.shutdown.clone(),
    };
    let (store, watch) = service.store_watched();
    match (options.stream_option, options.count_option) {
        (Some(options::StreamOption::Stream(s)), Some(options::CountOption::Count(count))) => {
            if filter.is_some() {
                return Err(Status::invalid_argument("filters apply to $all only"));
            }
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            run_blocking(reply, move |reply| {
                read_stream(&store, s, backwards, count, reply)
            });
        }
        (Some(options::StreamOption::All(a)), Some(options::CountOption::Count(count))) => {
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            let filter = filter.map(|(f, _)| f);
            run_blocking(reply, move |reply| {
                if backwards {
                    read_all_backward(&store, a, count, filter.as_ref(), reply)
                } else {
                    read_all_forward(&store, a, count, filter.as_ref(), reply)
                }
            });
        }
        (Some(options::StreamOption::Stream(s)), Some(options::CountOption::Subscription(_))) => {
            if filter.is_some() {
                return Err(Status::invalid_argument("filters apply to $all only"));
            }
            let stream = convert::stream_name(s.stream_identifier)?;
            if super::metadata::target(&stream).is_some() {
                // `$$S` is read from `S`'s metadata, never written as a stream: a
                // subscription to it would wait for ever.
                return Err(Status::unimplemented(format!(
                    "subscriptions to a metadata stream ({stream}) are not supported; read it instead"
                )));
            }
            let from = match s.revision_option {
                Some(stream_options::RevisionOption::Start(())) | None => {
                    SubscribeStream::new(stream.clone())
                }
                Some(stream_options::RevisionOption::End(())) => {
                    SubscribeStream::new(stream.clone()).from_end()
                }
                Some(stream_options::RevisionOption::Revision(r)) => {
                    SubscribeStream::new(stream.clone()).from_version(r.saturating_add(1))
                }
            };
            let subscription = blocking(move || store.subscribe_stream(from)).await?;
            subscribe(
                subscription,
                reply,
                watch,
                true,
                service.metrics.subscription(),
            )?;
        }
        (Some(options::StreamOption::All(a)), Some(options::CountOption::Subscription(_))) => {
            let mut from = match a.all_option {
                Some(all_options::AllOption::Start(())) | None => SubscribeAll::from_start(),
                Some(all_options::AllOption::End(())) => SubscribeAll::from_end(),
                Some(all_options::AllOption::Position(p)) => {
                    let (commit, store) = (p.commit_position, store.clone());
                    let prepare = tokio::task::spawn_blocking(move || {
                        prepare_of(&store, commit, p.prepare_position)
                    })
                    .await
                    .map_err(|e| Status::internal(format!("a read task failed: {e}")))??;
                    SubscribeAll::from(convert::token_after(commit, prepare)?)
                }
            };
            if let Some((f, every)) = filter {
                from = from.filter(f).checkpoint_every(every);
            }
            let subscription = blocking(move || store.subscribe_all(from)).await?;
            subscribe(
                subscription,
                reply,
                watch,
                false,
                service.metrics.subscription(),
            )?;
        }
        _ => {
            return Err(Status::invalid_argument(
                "a read names a stream or $all, and a count or a subscription",
            ));
        }
    }
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// How far back [`prepare_of`] looks for the append of a commit position: more events
/// than any append through this server holds.
const COMMIT_SEARCH_BYTES: u64 = 1 << 16;

/// The prepare position of a position a client sent. Some clients (Python's) send the
/// commit position of an event as both halves; this server's commit position of event
/// `i` of the append at `P` is `P + i + 1`, inside the append's frame, so the append is
/// the frame that holds byte `commit - 1`, found by trying the places before it (a
/// frame header names its own position, so no other place passes for a frame start).
/// A pair with two different halves, or one at the start of an append, is taken as is.
///
/// # Errors
/// `INVALID_ARGUMENT` when no append holds the position.
fn prepare_of(store: &Store, commit: u64, prepare: u64) -> Result<u64, Status> {
    let starts_append = |p: u64| store.read_all(ResumeToken::at(Position(p))).is_ok();
    if commit != prepare || commit == 0 || starts_append(commit) {
        return Ok(prepare);
    }
    let lowest = commit.saturating_sub(COMMIT_SEARCH_BYTES);
    (lowest..commit)
        .rev()
        .find(|&p| starts_append(p))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "position {commit} is not a position of this server"
            ))
        })
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("a read task failed: {e}")))?
        .map_err(|e| convert::status(&e))
}

/// Runs a read on a blocking thread; its error, if any, ends the answers.
fn run_blocking(reply: Reply, read: impl FnOnce(&Reply) -> Result<(), Status> + Send + 'static) {
    tokio::task::spawn_blocking(move || {
        if let Err(status) = read(&reply) {
            // The client may be gone; then nobody is told.
            let _ = reply.tx.blocking_send(Err(status));
        }
    });
}

fn store_status(e: crate::Error) -> Status {
    convert::status(&e)
}

fn read_stream(
    store: &Store,
    options: StreamOptions,
    backwards: bool,
    count: usize,
    reply: &Reply,
) -> Result<(), Status> {
    let stream = convert::stream_name(options.stream_identifier)?;
    if let Some(target) = super::metadata::target(&stream) {
        return read_metadata(
            store,
            &stream,
            target,
            options.revision_option,
            backwards,
            count,
            reply,
        );
    }
    let Some(last) = store.stream_version(&stream).map_err(store_status)? else {
        return reply.send(read_resp::Content::StreamNotFound(
            read_resp::StreamNotFound {
                stream_identifier: Some(convert::stream_identifier(&stream)),
            },
        ));
    };
    use stream_options::RevisionOption as R;
    let events = if backwards {
        let from = match options.revision_option {
            Some(R::Start(())) => Some(0),
            Some(R::End(())) | None => None,
            Some(R::Revision(r)) => Some(r),
        };
        store.read_stream_backward(&stream, from)
    } else {
        let from = match options.revision_option {
            Some(R::Start(())) | None => 0,
            Some(R::End(())) => last.saturating_add(1),
            Some(R::Revision(r)) => r,
        };
        store.read_stream(&stream, from)
    }
    .map_err(store_status)?;
    for e in events.take(count) {
        reply.send(reply.event(e.map_err(store_status)?))?;
    }
    Ok(())
}

/// A read of the metadata stream `$$S`: its one readable event is `S`'s current
/// metadata, at the metadata version (earlier versions are not kept).
fn read_metadata(
    store: &Store,
    stream: &str,
    target: &str,
    revision: Option<stream_options::RevisionOption>,
    backwards: bool,
    count: usize,
    reply: &Reply,
) -> Result<(), Status> {
    let Some(event) = super::metadata::read(store, stream, target, reply.uuid_as_string)? else {
        return reply.send(read_resp::Content::StreamNotFound(
            read_resp::StreamNotFound {
                stream_identifier: Some(convert::stream_identifier(stream)),
            },
        ));
    };
    use stream_options::RevisionOption as R;
    let version = event.stream_revision;
    let in_range = match (revision, backwards) {
        (Some(R::Start(())) | None, false) | (Some(R::End(())) | None, true) => true,
        (Some(R::Revision(r)), false) => r <= version,
        (Some(R::Revision(r)), true) => r >= version,
        (Some(R::End(())), false) | (Some(R::Start(())), true) => false,
    };
    if in_range && count > 0 {
        reply.send(read_resp::Content::Event(read_resp::ReadEvent {
            event: Some(event),
            link: None,
            // Clients expect a commit position on every event read (Python's asserts it).
            position: Some(read_resp::read_event::Position::CommitPosition(0)),
        }))?;
    }
    Ok(())
}

fn read_all_forward(
    store: &Store,
    options: AllOptions,
    count: usize,
    filter: Option<&Filter>,
    reply: &Reply,
) -> Result<(), Status> {
    let from = match options.all_option {
        Some(all_options::AllOption::Start(())) | None => ResumeToken::START,
        Some(all_options::AllOption::End(())) => return Ok(()),
        Some(all_options::AllOption::Position(p)) => convert::token_at(
            p.commit_position,
            prepare_of(store, p.commit_position, p.prepare_position)?,
        )?,
    };
    if count == 0 {
        return Ok(());
    }
    let mut sent = 0;
    let mut outcome = Ok(());
    store
        .read_all(from)
        .map_err(store_status)?
        .for_each_view(|v| {
            if filter.is_some_and(|f| !f.matches_event(&v)) {
                return ControlFlow::Continue(());
            }
            if let Err(status) = reply.send(reply.event(v.to_recorded())) {
                outcome = Err(status);
                return ControlFlow::Break(());
            }
            sent += 1;
            if sent >= count {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map_err(store_status)?;
    outcome
}

/// A backward `$all` read: a forward pass notes where each append starts and how many
/// events it holds (16 bytes an append), then the appends are read again in chunks from
/// the end, each chunk sent in reverse.
fn read_all_backward(
    store: &Store,
    options: AllOptions,
    count: usize,
    filter: Option<&Filter>,
    reply: &Reply,
) -> Result<(), Status> {
    let bound = match options.all_option {
        Some(all_options::AllOption::End(())) | None => None,
        Some(all_options::AllOption::Start(())) => return Ok(()),
        Some(all_options::AllOption::Position(p)) => Some(convert::token_at(
            p.commit_position,
            prepare_of(store, p.commit_position, p.prepare_position)?,
        )?),
    };
    if count == 0 {
        return Ok(());
    }
    let mut appends: Vec<(Position, u32)> = Vec::new();
    store
        .read_all(ResumeToken::START)
        .map_err(store_status)?
        .for_each_view(|v| {
            if bound.is_some_and(|b| (v.position, v.append_index) > (b.position, b.skip)) {
                return ControlFlow::Break(());
            }
            match appends.last_mut() {
                Some((p, n)) if *p == v.position => *n = n.saturating_add(1),
                _ => appends.push((v.position, 1)),
            }
            ControlFlow::Continue(())
        })
        .map_err(store_status)?;
    let mut sent = 0;
    let mut end = appends.len();
    while end > 0 {
        let mut start = end;
        let mut events: u32 = 0;
        while start > 0 && events < BACKWARD_CHUNK_EVENTS {
            start -= 1;
            events = events.saturating_add(appends.get(start).map_or(0, |a| a.1));
        }
        let Some(&(first, _)) = appends.get(start) else {
            break;
        };
        let mut chunk = Vec::new();
        let mut scanned: u32 = 0;
        store
            .read_all(ResumeToken::at(first))
            .map_err(store_status)?
            .for_each_view(|v| {
                if scanned >= events {
                    return ControlFlow::Break(());
                }
                scanned += 1;
                if filter.is_none_or(|f| f.matches_event(&v)) {
                    chunk.push(v.to_recorded());
                }
                ControlFlow::Continue(())
            })
            .map_err(store_status)?;
        for e in chunk.into_iter().rev() {
            reply.send(reply.event(e))?;
            sent += 1;
            if sent >= count {
                return Ok(());
            }
        }
        end = start;
    }
    Ok(())
}

/// Runs a subscription: a confirmation, then its deliveries, until the client goes, the
/// store closes or is replaced by a snapshot install (UNAVAILABLE, so clients
/// resubscribe) or the server stops.
fn subscribe(
    subscription: crate::Subscription,
    reply: Reply,
    mut watch: StoreWatch,
    of_stream: bool,
    open: super::metrics::Open,
) -> Result<(), Status> {
    let mut deliveries = subscription
        .into_stream()
        .map_err(|e| convert::status(&e))?;
    let Reply {
        tx,
        uuid_as_string,
        mut shutdown,
    } = reply;
    tokio::spawn(async move {
        // Counted as active while this task lives.
        let _open = open;
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let confirmation = read_resp::Content::Confirmation(read_resp::SubscriptionConfirmation {
            subscription_id: id,
        });
        if tx
            .send(Ok(ReadResp {
                content: Some(confirmation),
            }))
            .await
            .is_err()
        {
            return;
        }
        let mut last_token: Option<ResumeToken> = None;
        let mut last_revision: Option<u64> = None;
        loop {
            let delivery = tokio::select! {
                d = deliveries.next() => d,
                () = tx.closed() => return,
                () = watch.replaced() => {
                    let _ = tx.send(Err(Status::unavailable(STORE_REPLACED))).await;
                    return;
                }
                () = stopped(&mut shutdown) => {
                    let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                    return;
                }
            };
            let content = match delivery {
                Some(Ok(Delivery::Event(e))) => {
                    last_token = Some(e.resume_token());
                    last_revision = Some(e.version);
                    event_content(e, uuid_as_string)
                }
                Some(Ok(Delivery::Checkpoint(token))) => {
                    last_token = Some(token);
                    let (commit_position, prepare_position) = convert::token_position(token);
                    read_resp::Content::Checkpoint(read_resp::Checkpoint {
                        commit_position,
                        prepare_position,
                        timestamp: Some(convert::now_timestamp()),
                    })
                }
                Some(Ok(Delivery::CaughtUp)) => read_resp::Content::CaughtUp(read_resp::CaughtUp {
                    timestamp: Some(convert::now_timestamp()),
                    stream_revision: if of_stream {
                        last_revision.and_then(|r| i64::try_from(r).ok())
                    } else {
                        None
                    },
                    position: if of_stream {
                        None
                    } else {
                        last_token.map(|t| {
                            let (commit_position, prepare_position) = convert::token_position(t);
                            read_resp::Position {
                                commit_position,
                                prepare_position,
                            }
                        })
                    },
                }),
                Some(Err(e)) => {
                    let _ = tx.send(Err(convert::status(&e))).await;
                    return;
                }
                None => {
                    let _ = tx
                        .send(Err(Status::unavailable("the store was closed")))
                        .await;
                    return;
                }
            };
            if tx
                .send(Ok(ReadResp {
                    content: Some(content),
                }))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok(())
}

#[cfg(all(test, feature = "cluster"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};

    use super::*;
    use crate::cluster::{Command, StoreStateMachine};
    use crate::{ExpectedVersion, NewEvent, Options};

    async fn next_answer(
        rx: &mut mpsc::Receiver<Result<ReadResp, Status>>,
    ) -> Result<read_resp::Content, Status> {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("an answer in time")
            .expect("the subscription answers before it ends");
        answer.map(|r| r.content.unwrap())
    }

    /// A subscription on a cluster node's store goes on until a snapshot install
    /// replaces that store, then ends with UNAVAILABLE saying to resubscribe.
    #[test]
    fn a_subscription_ends_when_a_snapshot_replaces_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut leader =
                StoreStateMachine::open(dir.path().join("l"), Options::default()).unwrap();
            let mut node =
                StoreStateMachine::open(dir.path().join("n"), Options::default()).unwrap();
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
                payload: EntryPayload::Normal(
                    Command::append("s", ExpectedVersion::NoStream, [NewEvent::new("E", b"x")])
                        .into(),
                ),
            };
            leader.apply([entry]).await.unwrap();

            let (store, replaced) = node.store_watched();
            let subscription = store.subscribe_all(SubscribeAll::from_start()).unwrap();
            let (tx, mut rx) = mpsc::channel(8);
            let (_stop, shutdown) = watch::channel(false);
            let metrics = super::super::metrics::Metrics::new(&store);
            let reply = Reply {
                tx,
                uuid_as_string: false,
                shutdown,
            };
            let watch = StoreWatch::cluster(replaced);
            subscribe(subscription, reply, watch, false, metrics.subscription()).unwrap();
            assert!(matches!(
                next_answer(&mut rx).await,
                Ok(read_resp::Content::Confirmation(_))
            ));
            assert!(matches!(
                next_answer(&mut rx).await,
                Ok(read_resp::Content::CaughtUp(_))
            ));

            let snap = leader
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            let mut incoming = node.begin_receiving_snapshot().await.unwrap();
            let mut data = snap.snapshot;
            tokio::io::copy(&mut data, &mut *incoming).await.unwrap();
            node.install_snapshot(&snap.meta, incoming).await.unwrap();

            let end = next_answer(&mut rx).await.unwrap_err();
            assert_eq!(end.code(), tonic::Code::Unavailable);
            assert_eq!(end.message(), STORE_REPLACED);
            assert!(rx.recv().await.is_none(), "nothing after the end");
            // A subscription taken now follows the new store, which holds the event.
            let (store, replaced) = node.store_watched();
            assert!(!replaced.is_replaced());
            assert_eq!(store.stream_version("s").unwrap(), Some(0));
        });
    }
}
