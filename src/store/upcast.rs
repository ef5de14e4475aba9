//! Schema evolution: upcasters rewrite events of an older schema as they are read.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::event::EventView;

/// Most upcasters applied to one event: a chain longer than this is a cycle.
const MAX_CHAIN: usize = 64;

/// An event as an upcaster receives it and returns it: its type, schema version, data and
/// metadata. Everything else (stream, version, position, id, times) is the stored event's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcast {
    /// Event type.
    pub event_type: String,
    /// Schema version of `data`.
    pub schema_version: u32,
    /// Payload.
    pub data: Vec<u8>,
    /// Metadata.
    pub metadata: Vec<u8>,
}

type UpcastFn = dyn Fn(Upcast) -> Upcast + Send + Sync;

/// The upcasters of a store, registered per (event type, schema version) and applied on
/// every read path (stream and `$all` reads, borrowed or owned, subscriptions, `load`):
/// an event whose type and schema version have an upcaster is handed to it, and the
/// result again, until no upcaster applies (v1 → v2 → v3). Events are rewritten on the way
/// out only: the log keeps what was written. Reading allocates nothing for events no
/// upcaster applies to.
///
/// Each stored event stays one event (its version, position and resume token name it),
/// so an upcaster maps one event to one event: a type can be renamed or split into
/// several types by content, not into several events.
///
/// ```
/// use streamlog::{Upcast, Upcasters};
///
/// // v1 of "CustomerRegistered" called the field "name"; v2 calls it "full_name".
/// let upcasters = Upcasters::new().register("CustomerRegistered", 1, |e| Upcast {
///     data: String::from_utf8_lossy(&e.data)
///         .replace("\"name\":", "\"full_name\":")
///         .into_bytes(),
///     schema_version: 2,
///     ..e
/// });
/// assert!(!upcasters.is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    by_type: Arc<HashMap<String, HashMap<u32, Arc<UpcastFn>>>>,
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the upcaster of events of `event_type` at schema version `from_version`
    /// (replacing any earlier one for the same pair). It should return a later schema
    /// version or another type; a chain that comes back to a pair it already passed stops
    /// there.
    pub fn register(
        mut self,
        event_type: impl Into<String>,
        from_version: u32,
        upcast: impl Fn(Upcast) -> Upcast + Send + Sync + 'static,
    ) -> Self {
        let map = Arc::make_mut(&mut self.by_type);
        map.entry(event_type.into())
            .or_default()
            .insert(from_version, Arc::new(upcast));
        self
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }

    fn find(&self, event_type: &str, version: u32) -> Option<&Arc<UpcastFn>> {
        self.by_type.get(event_type)?.get(&version)
    }

    /// Hands `event` to `visit` as the upcasters leave it (as it is when none applies).
    #[inline]
    pub(crate) fn apply<R>(
        &self,
        event: EventView<'_>,
        visit: impl FnOnce(EventView<'_>) -> R,
    ) -> R {
        // Most stores have no upcaster: that check stays in the caller's loop.
        if self.by_type.is_empty() {
            return visit(event);
        }
        self.apply_some(event, visit)
    }

    /// [`Upcasters::apply`] when some upcaster is registered.
    #[inline(never)]
    fn apply_some<R>(&self, event: EventView<'_>, visit: impl FnOnce(EventView<'_>) -> R) -> R {
        if self.find(event.event_type, event.schema_version).is_none() {
            return visit(event);
        }
        let mut current = Upcast {
            event_type: event.event_type.to_string(),
            schema_version: event.schema_version,
            data: event.data.to_vec(),
            metadata: event.metadata.to_vec(),
        };
        let mut seen: Vec<(String, u32)> = Vec::new();
        while seen.len() < MAX_CHAIN {
            let key = (current.event_type.clone(), current.schema_version);
            if seen.contains(&key) {
                break;
            }
            let Some(f) = self.find(&key.0, key.1) else {
                break;
            };
            seen.push(key);
            current = f(current);
        }
        visit(EventView {
            event_type: &current.event_type,
            schema_version: current.schema_version,
            data: &current.data,
            metadata: &current.metadata,
            ..event
        })
    }
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pairs: Vec<(&str, u32)> = self
            .by_type
            .iter()
            .flat_map(|(t, m)| m.keys().map(move |v| (t.as_str(), *v)))
            .collect();
        pairs.sort_unstable();
        f.debug_struct("Upcasters")
            .field("registered", &pairs)
            .finish()
    }
}
