//! Server-side filters for `$all`: which events a filtered read or subscription delivers.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::EventView;

/// Which events of `$all` to deliver. Filters are checked on the stream name and the event
/// type only, before an event's bytes are copied, so skipping costs little.
///
/// ```
/// use streamlog::Filter;
///
/// let orders = Filter::event_type_prefix("Order");
/// assert!(orders.matches("cart-1", "OrderPlaced"));
/// let user_streams = Filter::stream_regex(r"^(?!\$)").unwrap(); // look-ahead works
/// assert!(!user_streams.matches("$checkpoint-a", "T"));
/// ```
#[derive(Clone)]
pub struct Filter(Kind);

#[derive(Clone)]
enum Kind {
    Streams(BTreeSet<String>),
    StreamPrefix(Vec<String>),
    EventTypePrefix(Vec<String>),
    EventTypes(BTreeSet<String>),
    StreamRegex(Arc<fancy_regex::Regex>),
    EventTypeRegex(Arc<fancy_regex::Regex>),
    AllOf(Vec<Filter>),
}

impl Filter {
    /// Events of the streams named `streams` (exact names).
    pub fn streams<S: Into<String>>(streams: impl IntoIterator<Item = S>) -> Self {
        Filter(Kind::Streams(streams.into_iter().map(Into::into).collect()))
    }

    /// Events that pass every one of `filters` (all events, for none).
    pub fn all_of(filters: impl IntoIterator<Item = Filter>) -> Self {
        Filter(Kind::AllOf(filters.into_iter().collect()))
    }

    /// Events of streams whose name starts with `prefix`.
    pub fn stream_prefix(prefix: impl Into<String>) -> Self {
        Filter(Kind::StreamPrefix(vec![prefix.into()]))
    }

    /// Events of streams whose name starts with any of `prefixes`.
    pub fn stream_prefixes<S: Into<String>>(prefixes: impl IntoIterator<Item = S>) -> Self {
        Filter(Kind::StreamPrefix(
            prefixes.into_iter().map(Into::into).collect(),
        ))
    }

    /// Events whose type starts with `prefix`.
    pub fn event_type_prefix(prefix: impl Into<String>) -> Self {
        Filter(Kind::EventTypePrefix(vec![prefix.into()]))
    }

    /// Events whose type starts with any of `prefixes`.
    pub fn event_type_prefixes<S: Into<String>>(prefixes: impl IntoIterator<Item = S>) -> Self {
        Filter(Kind::EventTypePrefix(
            prefixes.into_iter().map(Into::into).collect(),
        ))
    }

    /// Events whose type is one of `types`.
    pub fn event_types<S: Into<String>>(types: impl IntoIterator<Item = S>) -> Self {
        Filter(Kind::EventTypes(
            types.into_iter().map(Into::into).collect(),
        ))
    }

    /// Events of streams whose name matches the regular expression `pattern` (anywhere in
    /// the name unless anchored; look-around and back-references are supported, as the
    /// clients of other event stores send them).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `pattern` is not a valid regular expression.
    pub fn stream_regex(pattern: &str) -> Result<Self> {
        Ok(Filter(Kind::StreamRegex(Arc::new(compile(pattern)?))))
    }

    /// Events whose type matches the regular expression `pattern`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `pattern` is not a valid regular expression.
    pub fn event_type_regex(pattern: &str) -> Result<Self> {
        Ok(Filter(Kind::EventTypeRegex(Arc::new(compile(pattern)?))))
    }

    /// Whether an event of `stream` with type `event_type` passes. A regular expression
    /// that cannot finish (its backtracking limit hit) does not match.
    pub fn matches(&self, stream: &str, event_type: &str) -> bool {
        match &self.0 {
            Kind::Streams(s) => s.contains(stream),
            Kind::AllOf(all) => all.iter().all(|f| f.matches(stream, event_type)),
            Kind::StreamPrefix(p) => p.iter().any(|p| stream.starts_with(p.as_str())),
            Kind::EventTypePrefix(p) => p.iter().any(|p| event_type.starts_with(p.as_str())),
            Kind::EventTypes(t) => t.contains(event_type),
            Kind::StreamRegex(r) => r.is_match(stream).unwrap_or(false),
            Kind::EventTypeRegex(r) => r.is_match(event_type).unwrap_or(false),
        }
    }

    /// The event types this filter passes, when it passes exactly a set of them (so that
    /// a shared reader can look subscribers up by type instead of testing each filter).
    pub(crate) fn exact_event_types(&self) -> Option<&BTreeSet<String>> {
        match &self.0 {
            Kind::EventTypes(t) => Some(t),
            _ => None,
        }
    }

    /// [`Filter::matches`] on an event view.
    pub fn matches_event(&self, e: &EventView<'_>) -> bool {
        self.matches(e.stream, e.event_type)
    }
}

fn compile(pattern: &str) -> Result<fancy_regex::Regex> {
    fancy_regex::Regex::new(pattern).map_err(|e| {
        Error::InvalidArgument(format!(
            "{pattern:?} is not a valid regular expression: {e}"
        ))
    })
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Streams(s) => write!(f, "Filter::streams({s:?})"),
            Kind::AllOf(all) => write!(f, "Filter::all_of({all:?})"),
            Kind::StreamPrefix(p) => write!(f, "Filter::stream_prefixes({p:?})"),
            Kind::EventTypePrefix(p) => write!(f, "Filter::event_type_prefixes({p:?})"),
            Kind::EventTypes(t) => write!(f, "Filter::event_types({t:?})"),
            Kind::StreamRegex(r) => write!(f, "Filter::stream_regex({:?})", r.as_str()),
            Kind::EventTypeRegex(r) => write!(f, "Filter::event_type_regex({:?})", r.as_str()),
        }
    }
}
