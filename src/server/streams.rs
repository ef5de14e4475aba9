//! The `Streams` service: appends (one call or batched), reads and subscriptions (in
//! `read`), deletes (waiting for the library's deletion, see
//! [`StreamsService::delete_stream`]), each through raft on a cluster node.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use prost::Message as _;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::limits::Limits;
use super::metadata;
use super::metrics::Metrics;
use super::proto::event_store::client as pb;
use super::proto::google::rpc;
use crate::{AppendResult, Error, ExpectedVersion, NewEvent, ResumeToken, Store};
use pb::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    ReadResp, TombstoneReq, TombstoneResp, append_req, append_resp, batch_append_req,
    batch_append_resp, streams_server,
};

/// The `Streams` service over one store.
#[derive(Debug, Clone)]
pub(super) struct StreamsService {
    pub(super) store: Store,
    /// Gathers a single node's appends into groups; `None` on a cluster node.
    pub(super) appender: Option<super::appender::Appender>,
    pub(super) limits: Limits,
    /// Becomes `true` when the server stops: subscriptions and batch streams end.
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) metrics: Arc<Metrics>,
    /// The raft node when the server is a node of a cluster: writes go through it, reads
    /// come from its store.
    #[cfg(feature = "cluster")]
    pub(super) node: Option<super::cluster::ClusterNode>,
}

/// What an append ended in, for its answer.
enum Outcome {
    Done(AppendResult),
    /// An append of no events: the stream's current version, checked but not written.
    Checked(Option<u64>),
    Conflict {
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
}

impl StreamsService {
    /// The store reads come from: the server's, or the cluster node's state machine (which
    /// a snapshot install replaces).
    pub(super) fn store(&self) -> Store {
        #[cfg(feature = "cluster")]
        if let Some(node) = &self.node {
            return node.store();
        }
        self.store.clone()
    }

    /// The store reads come from (as [`StreamsService::store`]), with what ends a
    /// subscription on it when a snapshot install replaces it.
    pub(super) fn store_watched(&self) -> (Store, super::read::StoreWatch) {
        #[cfg(feature = "cluster")]
        if let Some(node) = &self.node {
            let (store, replaced) = node.store_watched();
            return (store, super::read::StoreWatch::cluster(replaced));
        }
        (self.store.clone(), super::read::StoreWatch::never())
    }

    /// Waits until this server may answer a read asked with `metadata` (a cluster node
    /// answers on the leader, or anywhere with `requires-leader: false`).
    pub(super) async fn ready_to_read(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(), Status> {
        #[cfg(feature = "cluster")]
        if let Some(node) = &self.node {
            return node
                .ready_to_read(super::cluster::requires_leader(metadata))
                .await;
        }
        let _ = metadata;
        Ok(())
    }

    /// Proposes `cmd` through raft on a cluster node. The replicated outcome comes back
    /// as the store answers on a single node (a conflict or a deleted stream as the
    /// inner error); a status when it was not decided (not leader, no quorum, input
    /// every replica refused).
    #[cfg(feature = "cluster")]
    async fn write_replicated(
        node: &super::cluster::ClusterNode,
        cmd: crate::cluster::Command,
    ) -> Result<crate::Result<AppendResult>, Status> {
        use crate::cluster::Response as R;
        let (stream, expected) = (cmd.stream.clone(), ExpectedVersion::from(cmd.expected));
        match node.write(cmd).await? {
            R::Appended(a) => Ok(Ok(a.into())),
            R::WrongExpectedVersion { actual } => Ok(Err(Error::WrongExpectedVersion {
                stream,
                expected,
                actual,
            })),
            R::StreamDeleted => Ok(Err(Error::StreamDeleted { stream })),
            R::Refused(reason) => Err(Status::invalid_argument(reason)),
            R::Batch(_) => Err(Status::internal(
                "a single write was answered with the outcomes of a batch",
            )),
            R::Empty | R::Recovered => Err(Status::unavailable(
                "the write's outcome is unknown after a restart of the leader; retry it \
                 (an append with the same event ids)",
            )),
        }
    }

    /// Appends: through raft on a cluster node, else on a blocking thread.
    async fn append_blocking(
        &self,
        stream: String,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Outcome, Status> {
        #[cfg(feature = "cluster")]
        if let Some(node) = &self.node {
            if events.is_empty() {
                // A check of an expectation is a read, linearizable on the leader.
                node.ready_to_read(true).await?;
            } else {
                let (count, bytes) = (
                    events.len(),
                    events
                        .iter()
                        .map(|e| e.data.len().saturating_add(e.metadata.len()))
                        .sum::<usize>(),
                );
                // `$$S` holds the metadata of `S`: the last event replaces it.
                let cmd = match (metadata::target(&stream), events.last()) {
                    (Some(target), Some(last)) => {
                        crate::cluster::Command::set_metadata(target, expected, &last.data)
                            .map_err(|e| convert::status(&e))?
                    }
                    _ => crate::cluster::Command::append(stream, expected, events),
                };
                return match Self::write_replicated(node, cmd).await? {
                    Ok(r) => {
                        if !r.deduplicated {
                            self.metrics.appended(count, bytes);
                        }
                        Ok(Outcome::Done(r))
                    }
                    Err(Error::WrongExpectedVersion {
                        expected, actual, ..
                    }) => Ok(Outcome::Conflict { expected, actual }),
                    Err(e) => Err(convert::status(&e)),
                };
            }
        }
        let store = self.store();
        let (count, bytes) = (
            events.len(),
            events
                .iter()
                .map(|e| e.data.len().saturating_add(e.metadata.len()))
                .sum::<usize>(),
        );
        if let Some(appender) = &self.appender
            && !events.is_empty()
            && metadata::target(&stream).is_none()
        {
            let result = match appender.append(stream, expected, events, bytes).await? {
                Ok(r) => {
                    if !r.deduplicated {
                        self.metrics.appended(count, bytes);
                    }
                    Outcome::Done(r)
                }
                Err(Error::WrongExpectedVersion {
                    expected, actual, ..
                }) => Outcome::Conflict { expected, actual },
                Err(e) => return Err(convert::status(&e)),
            };
            return Ok(result);
        }
        let result = tokio::task::spawn_blocking(move || {
            // `$$S` holds the metadata of `S`: its revision is the metadata version.
            let metadata_of = metadata::target(&stream);
            if events.is_empty() {
                // Clients append nothing to check an expectation; the store refuses empty
                // appends, so check it here (a read, racing other appends like any read).
                let actual = match metadata_of {
                    Some(target) => metadata::version(&store, target)?,
                    None => store.stream_version(&stream)?,
                };
                let ok = match expected {
                    ExpectedVersion::Any => true,
                    ExpectedVersion::NoStream => actual.is_none(),
                    ExpectedVersion::StreamExists => actual.is_some(),
                    ExpectedVersion::Exact(v) => actual == Some(v),
                };
                return if ok {
                    Ok(Outcome::Checked(actual))
                } else {
                    Ok(Outcome::Conflict { expected, actual })
                };
            }
            let appended = match metadata_of {
                Some(target) => metadata::set(&store, target, expected, &events),
                None => store.append(&stream, expected, events),
            };
            match appended {
                Ok(r) => Ok(Outcome::Done(r)),
                Err(Error::WrongExpectedVersion {
                    expected, actual, ..
                }) => Ok(Outcome::Conflict { expected, actual }),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| Status::internal(format!("the append task failed: {e}")))?;
        if let Ok(Outcome::Done(r)) = &result
            && !r.deduplicated
        {
            self.metrics.appended(count, bytes);
        }
        result.map_err(|e| convert::status(&e))
    }
}

/// Counts the bytes of an append's events against the limit.
fn add_bytes(
    total: &mut usize,
    limits: &Limits,
    data: &[u8],
    metadata: &[u8],
) -> Result<(), Status> {
    *total = total
        .saturating_add(data.len())
        .saturating_add(metadata.len());
    if *total > limits.max_append_bytes {
        return Err(Status::invalid_argument(format!(
            "the append is larger than the server's limit of {} bytes",
            limits.max_append_bytes
        )));
    }
    Ok(())
}

fn append_position(r: &AppendResult) -> (u64, u64) {
    let last = r.last_version.saturating_sub(r.first_version);
    convert::event_position(r.position, u32::try_from(last).unwrap_or(u32::MAX))
}

fn append_response(outcome: Outcome) -> AppendResp {
    use append_resp::{success, wrong_expected_version as wev};
    let result = match outcome {
        Outcome::Done(r) => {
            let (commit_position, prepare_position) = append_position(&r);
            append_resp::Result::Success(append_resp::Success {
                current_revision_option: Some(success::CurrentRevisionOption::CurrentRevision(
                    r.last_version,
                )),
                position_option: Some(success::PositionOption::Position(append_resp::Position {
                    commit_position,
                    prepare_position,
                })),
            })
        }
        Outcome::Checked(actual) => append_resp::Result::Success(append_resp::Success {
            current_revision_option: Some(match actual {
                Some(v) => success::CurrentRevisionOption::CurrentRevision(v),
                None => success::CurrentRevisionOption::NoStream(()),
            }),
            position_option: Some(success::PositionOption::NoPosition(())),
        }),
        Outcome::Conflict { expected, actual } => {
            append_resp::Result::WrongExpectedVersion(append_resp::WrongExpectedVersion {
                current_revision_option_20_6_0: Some(match actual {
                    Some(v) => wev::CurrentRevisionOption2060::CurrentRevision2060(v),
                    None => wev::CurrentRevisionOption2060::NoStream2060(()),
                }),
                expected_revision_option_20_6_0: match expected {
                    ExpectedVersion::Exact(v) => {
                        Some(wev::ExpectedRevisionOption2060::ExpectedRevision2060(v))
                    }
                    ExpectedVersion::Any => Some(wev::ExpectedRevisionOption2060::Any2060(())),
                    ExpectedVersion::StreamExists => {
                        Some(wev::ExpectedRevisionOption2060::StreamExists2060(()))
                    }
                    ExpectedVersion::NoStream => None,
                },
                current_revision_option: Some(match actual {
                    Some(v) => wev::CurrentRevisionOption::CurrentRevision(v),
                    None => wev::CurrentRevisionOption::CurrentNoStream(()),
                }),
                expected_revision_option: Some(match expected {
                    ExpectedVersion::Exact(v) => wev::ExpectedRevisionOption::ExpectedRevision(v),
                    ExpectedVersion::Any => wev::ExpectedRevisionOption::ExpectedAny(()),
                    ExpectedVersion::StreamExists => {
                        wev::ExpectedRevisionOption::ExpectedStreamExists(())
                    }
                    ExpectedVersion::NoStream => wev::ExpectedRevisionOption::ExpectedNoStream(()),
                }),
            })
        }
    };
    AppendResp {
        result: Some(result),
    }
}

/// A batch append being received: its options and the events so far.
struct Batch {
    stream: String,
    expected: ExpectedVersion,
    /// The options as the client sent them, echoed in the answer.
    expected_echo: Option<batch_append_resp::ExpectedStreamPosition>,
    events: Vec<NewEvent>,
    bytes: usize,
}

fn batch_options(
    options: batch_append_req::Options,
) -> Result<
    (
        String,
        ExpectedVersion,
        Option<batch_append_resp::ExpectedStreamPosition>,
    ),
    Status,
> {
    use batch_append_req::options::ExpectedStreamPosition as In;
    use batch_append_resp::ExpectedStreamPosition as Out;
    let stream = convert::stream_name(options.stream_identifier)?;
    let (expected, echo) = match options.expected_stream_position {
        Some(In::StreamPosition(v)) => (ExpectedVersion::Exact(v), Some(Out::StreamPosition(v))),
        Some(In::NoStream(())) => (ExpectedVersion::NoStream, Some(Out::NoStream(()))),
        Some(In::StreamExists(())) => (ExpectedVersion::StreamExists, Some(Out::StreamExists(()))),
        Some(In::Any(())) | None => (ExpectedVersion::Any, Some(Out::Any(()))),
    };
    Ok((stream, expected, echo))
}

/// The per-batch error of a batch append (a status inside a successful call).
fn batch_error(status: &Status, details: Option<prost_types::Any>) -> batch_append_resp::Result {
    batch_append_resp::Result::Error(rpc::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details,
    })
}

fn batch_response(
    correlation_id: pb::Uuid,
    stream: &str,
    expected_echo: Option<batch_append_resp::ExpectedStreamPosition>,
    outcome: Result<Outcome, Status>,
) -> BatchAppendResp {
    use batch_append_resp::success;
    let result = match outcome {
        Ok(Outcome::Done(r)) => {
            let (commit_position, prepare_position) = append_position(&r);
            batch_append_resp::Result::Success(batch_append_resp::Success {
                current_revision_option: Some(success::CurrentRevisionOption::CurrentRevision(
                    r.last_version,
                )),
                position_option: Some(success::PositionOption::Position(pb::AllStreamPosition {
                    commit_position,
                    prepare_position,
                })),
            })
        }
        Ok(Outcome::Checked(actual)) => {
            batch_append_resp::Result::Success(batch_append_resp::Success {
                current_revision_option: Some(match actual {
                    Some(v) => success::CurrentRevisionOption::CurrentRevision(v),
                    None => success::CurrentRevisionOption::NoStream(()),
                }),
                position_option: Some(success::PositionOption::NoPosition(())),
            })
        }
        Ok(Outcome::Conflict { expected, actual }) => {
            use pb::wrong_expected_version::{
                CurrentStreamRevisionOption as Cur, ExpectedStreamPositionOption as Exp,
            };
            let details = pb::WrongExpectedVersion {
                current_stream_revision_option: Some(match actual {
                    Some(v) => Cur::CurrentStreamRevision(v),
                    None => Cur::CurrentNoStream(()),
                }),
                expected_stream_position_option: Some(match expected {
                    ExpectedVersion::Exact(v) => Exp::ExpectedStreamPosition(v),
                    ExpectedVersion::Any => Exp::ExpectedAny(()),
                    ExpectedVersion::StreamExists => Exp::ExpectedStreamExists(()),
                    ExpectedVersion::NoStream => Exp::ExpectedNoStream(()),
                }),
            };
            let actual = actual.map_or_else(|| "no stream".to_owned(), |v| v.to_string());
            let status = Status::failed_precondition(format!(
                "wrong expected version: expected {expected}, the stream is at {actual}"
            ));
            batch_error(
                &status,
                Some(prost_types::Any {
                    type_url: "type.googleapis.com/event_store.client.WrongExpectedVersion"
                        .to_owned(),
                    value: details.encode_to_vec(),
                }),
            )
        }
        Err(status) => {
            // A hard-deleted stream is named in a detail, as KurrentDB does, which
            // clients (Python's) turn into their "stream deleted" error.
            let deleted = status
                .metadata()
                .get("exception")
                .is_some_and(|v| v == "stream-deleted");
            let details = deleted.then(|| prost_types::Any {
                type_url: "type.googleapis.com/event_store.client.StreamDeleted".to_owned(),
                value: pb::StreamDeleted {
                    stream_identifier: Some(convert::stream_identifier(stream)),
                }
                .encode_to_vec(),
            });
            batch_error(&status, details)
        }
    };
    BatchAppendResp {
        correlation_id: Some(correlation_id),
        result: Some(result),
        stream_identifier: Some(convert::stream_identifier(stream)),
        expected_stream_position: expected_echo,
    }
}

/// Completes when the server starts stopping.
pub(super) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A boxed stream of answers, as tonic takes them.
pub(super) type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl streams_server::Streams for StreamsService {
    type ReadStream = Answers<ReadResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Self::ReadStream>, Status> {
        let subscription = request
            .get_ref()
            .options
            .as_ref()
            .and_then(|o| o.count_option.as_ref())
            .is_some_and(|c| {
                matches!(
                    c,
                    pb::streams::read_req::options::CountOption::Subscription(_)
                )
            });
        // Subscriptions run on any node: they follow its store as it applies entries.
        if !subscription {
            self.ready_to_read(request.metadata()).await?;
        }
        let answers = super::read::read(self, request.into_inner()).await?;
        Ok(Response::new(answers))
    }

    /// One append: the options, then the events. Nothing is appended before the client
    /// has sent its last message, so a client that goes away mid-append appends nothing.
    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        use append_req::options::ExpectedStreamRevision as Rev;
        let mut messages = request.into_inner();
        let Some(AppendReq {
            content: Some(append_req::Content::Options(options)),
        }) = messages.message().await.map_err(refused_message)?
        else {
            return Err(Status::invalid_argument(
                "an append starts with its options (stream and expected revision)",
            ));
        };
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = match options.expected_stream_revision {
            Some(Rev::Revision(v)) => convert::expected(Some(v), false, false),
            Some(Rev::NoStream(())) => convert::expected(None, true, false),
            Some(Rev::StreamExists(())) => convert::expected(None, false, true),
            Some(Rev::Any(())) | None => convert::expected(None, false, false),
        };
        let mut events = Vec::new();
        let mut bytes = 0;
        while let Some(message) = messages.message().await.map_err(refused_message)? {
            let Some(append_req::Content::ProposedMessage(m)) = message.content else {
                return Err(Status::invalid_argument(
                    "after its options, an append sends only events",
                ));
            };
            add_bytes(&mut bytes, &self.limits, &m.data, &m.custom_metadata)?;
            if events.len() >= self.limits.max_events_per_append {
                return Err(Status::invalid_argument(format!(
                    "an append holds at most {} events here",
                    self.limits.max_events_per_append
                )));
            }
            events.push(convert::new_event(
                m.id,
                m.metadata,
                m.custom_metadata.to_vec(),
                m.data.to_vec(),
            )?);
        }
        let outcome = self.append_blocking(stream, expected, events).await?;
        Ok(Response::new(append_response(outcome)))
    }

    type BatchAppendStream = Answers<BatchAppendResp>;

    /// Batches keyed by correlation id; each is appended when its final part arrives, and
    /// answered on the response stream (several may be in flight). Parts of batches that
    /// never got their final part when the client goes away are dropped, never appended.
    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        let mut messages = request.into_inner();
        let (tx, rx) = mpsc::channel(32);
        let service = self.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let in_flight = Arc::new(Semaphore::new(service.limits.max_batches_in_flight));
            let mut batches: HashMap<[u8; 16], Batch> = HashMap::new();
            loop {
                let message = tokio::select! {
                    m = messages.message() => m,
                    () = stopped(&mut shutdown) => break,
                };
                let request = match message {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    // A message the transport refused (one over --max-message-bytes, say):
                    // the client hears why, rather than an end of answers.
                    Err(status) => {
                        let _ = tx.send(Err(refused_message(status))).await;
                        break;
                    }
                };
                let Some(correlation) = request.correlation_id.clone() else {
                    let _ = tx
                        .send(Err(Status::invalid_argument(
                            "a batch has no correlation id",
                        )))
                        .await;
                    break;
                };
                let key = match convert::event_id(Some(correlation.clone())) {
                    Ok(id) => id.0,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let outcome = service.take_batch_part(&mut batches, key, request);
                let batch = match outcome {
                    Ok(Some(batch)) => batch,
                    Ok(None) => continue,
                    Err((stream, status)) => {
                        let answer = batch_response(correlation, &stream, None, Err(status));
                        if tx.send(Ok(answer)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                let service = service.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Batch {
                        stream,
                        expected,
                        expected_echo,
                        events,
                        ..
                    } = batch;
                    let outcome = service
                        .append_blocking(stream.clone(), expected, events)
                        .await;
                    let answer = batch_response(correlation, &stream, expected_echo, outcome);
                    let _ = tx.send(Ok(answer)).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        use pb::streams::delete_req::options::ExpectedStreamRevision as Rev;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a delete has no options"))?;
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = match options.expected_stream_revision {
            Some(Rev::Revision(v)) => ExpectedVersion::Exact(v),
            Some(Rev::NoStream(())) => ExpectedVersion::NoStream,
            Some(Rev::StreamExists(())) => ExpectedVersion::StreamExists,
            Some(Rev::Any(())) | None => ExpectedVersion::Any,
        };
        let (commit_position, prepare_position) = self
            .delete_stream(&stream, expected, Deletion::Soft)
            .await?;
        Ok(Response::new(DeleteResp {
            position_option: Some(pb::streams::delete_resp::PositionOption::Position(
                pb::streams::delete_resp::Position {
                    commit_position,
                    prepare_position,
                },
            )),
        }))
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        use pb::streams::tombstone_req::options::ExpectedStreamRevision as Rev;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a tombstone has no options"))?;
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = match options.expected_stream_revision {
            Some(Rev::Revision(v)) => ExpectedVersion::Exact(v),
            Some(Rev::NoStream(())) => ExpectedVersion::NoStream,
            Some(Rev::StreamExists(())) => ExpectedVersion::StreamExists,
            Some(Rev::Any(())) | None => ExpectedVersion::Any,
        };
        let (commit_position, prepare_position) = self
            .delete_stream(&stream, expected, Deletion::Hard)
            .await?;
        Ok(Response::new(TombstoneResp {
            position_option: Some(pb::streams::tombstone_resp::PositionOption::Position(
                pb::streams::tombstone_resp::Position {
                    commit_position,
                    prepare_position,
                },
            )),
        }))
    }
}

impl StreamsService {
    /// Adds one part of a batch; returns the whole batch when this part is its last.
    /// An error names the stream (when known) for the answer; the batch is dropped.
    #[allow(clippy::result_large_err)]
    fn take_batch_part(
        &self,
        batches: &mut HashMap<[u8; 16], Batch>,
        key: [u8; 16],
        request: BatchAppendReq,
    ) -> Result<Option<Batch>, (String, Status)> {
        let mut batch = match (batches.remove(&key), request.options) {
            (Some(batch), _) => batch,
            (None, Some(options)) => {
                if batches.len() >= self.limits.max_batches_in_flight {
                    return Err((
                        String::new(),
                        Status::resource_exhausted("too many unfinished batches on this call"),
                    ));
                }
                let (stream, expected, expected_echo) =
                    batch_options(options).map_err(|s| (String::new(), s))?;
                Batch {
                    stream,
                    expected,
                    expected_echo,
                    events: Vec::new(),
                    bytes: 0,
                }
            }
            (None, None) => {
                return Err((
                    String::new(),
                    Status::invalid_argument("the first part of a batch has no options"),
                ));
            }
        };
        for m in request.proposed_messages {
            if let Err(status) =
                add_bytes(&mut batch.bytes, &self.limits, &m.data, &m.custom_metadata).and_then(
                    |()| {
                        if batch.events.len() >= self.limits.max_events_per_append {
                            return Err(Status::invalid_argument(format!(
                                "an append holds at most {} events here",
                                self.limits.max_events_per_append
                            )));
                        }
                        Ok(())
                    },
                )
            {
                return Err((batch.stream, status));
            }
            match convert::new_event(
                m.id,
                m.metadata,
                m.custom_metadata.to_vec(),
                m.data.to_vec(),
            ) {
                Ok(e) => batch.events.push(e),
                Err(status) => return Err((batch.stream, status)),
            }
        }
        if request.is_final {
            Ok(Some(batch))
        } else {
            batches.insert(key, batch);
            Ok(None)
        }
    }
}

/// Soft or hard deletion.
#[derive(Debug, Clone, Copy)]
pub(super) enum Deletion {
    /// `Streams.Delete`: the stream reads as empty; appending again recreates it.
    Soft,
    /// `Streams.Tombstone`: the stream is gone for good; reads and appends fail.
    Hard,
}

impl StreamsService {
    /// Where `Streams.Delete` and `Streams.Tombstone` reach the store: through raft on a
    /// cluster node, else on a blocking thread (a delete waits for its commit like an
    /// append); returns the (commit, prepare) position of the deletion. A wrong expected
    /// version, and a stream already hard deleted, come back as FAILED_PRECONDITION with
    /// the `exception` trailer clients read ([`convert::status`]).
    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        how: Deletion,
    ) -> Result<(u64, u64), Status> {
        #[cfg(feature = "cluster")]
        if let Some(node) = &self.node {
            let cmd = match how {
                Deletion::Soft => crate::cluster::Command::delete(stream, expected),
                Deletion::Hard => crate::cluster::Command::tombstone(stream, expected),
            };
            let r = Self::write_replicated(node, cmd)
                .await?
                .map_err(|e| convert::status(&e))?;
            return Ok(convert::token_position(ResumeToken::at(r.position)));
        }
        let (store, name) = (self.store(), stream.to_string());
        let result = tokio::task::spawn_blocking(move || match how {
            Deletion::Soft => store.delete_stream(&name, expected),
            Deletion::Hard => store.tombstone_stream(&name, expected),
        })
        .await
        .map_err(|e| Status::internal(format!("the delete task failed: {e}")))?
        .map_err(|e| convert::status(&e))?;
        Ok(convert::token_position(ResumeToken::at(result.position)))
    }
}

/// A request message the transport refused (too large, or not decodable): one log line,
/// and the status for the client.
fn refused_message(status: Status) -> Status {
    super::logline::emit(
        "warn",
        "request_refused",
        serde_json::json!({
            "code": format!("{:?}", status.code()),
            "error": status.message(),
        }),
    );
    status
}
