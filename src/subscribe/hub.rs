//! The shared reader of a store's filtered `$all` subscriptions (the hub).
//!
//! Without it, every live filtered subscriber reads every new append and checks every
//! event against its own filter: a thousand subscribers to a rare event type check each
//! event a thousand times. The hub is one thread per store that follows the visible end of
//! the log, checks each event once per distinct filter (subscribers with equal filters
//! form one group; filters on exact event types are looked up by type), and hands what
//! matches, and the checkpoints each subscriber is due, to each subscriber through a
//! bounded queue of its own.
//!
//! The switches, which must neither lose nor repeat an event:
//! - **Joining.** A subscriber joins only when it has read everything visible and stands
//!   at the start of an append (`at`). Under the hub's lock, the hub is either idle (it
//!   then starts from `at`), exactly at `at`, behind it (the subscriber is served from
//!   `at` on: earlier events are not its), or ahead of it, at `from`: the subscriber then
//!   reads `at..from` from the log by itself (everything there is visible, as the hub has
//!   read it) and takes the hub's deliveries, which start at `from`, after that. The
//!   hub's position only moves under its lock, at the end of a batch of whole appends.
//! - **Falling behind.** When a subscriber's queue is full, the hub detaches it and tells
//!   it where to resume: at the event that did not fit. The subscriber first takes what
//!   is queued (all of it before that event), then reads the log by itself from there, as
//!   subscribers always did, and joins again once it has caught up. Memory stays bounded:
//!   [`HANDOFF_CAPACITY`] deliveries per subscriber, never more.
//! - **Errors and close.** A read error or a close detaches every subscriber at the event
//!   after the last one handed out: each then meets the error (or the close) by itself.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustc_hash::FxHashMap;

use super::{Delivery, Filter};
use crate::store::{EventView, RecordedEvent, ResumeToken, Store, StoreRef};

/// Deliveries queued for one subscriber at most; a subscriber that lets more pile up
/// is detached and reads the log by itself.
pub const HANDOFF_CAPACITY: usize = 256;

/// How long the hub waits for appends at a time (it also looks for a close then).
const HUB_WAIT: Duration = Duration::from_millis(50);

/// One subscriber's side of the hand-off.
#[derive(Debug, Default)]
pub(super) struct Slot {
    state: Mutex<SlotState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    queue: VecDeque<Delivery>,
    /// Set when the hub let the subscriber go: where it resumes, once the queue is empty.
    detached: Option<ResumeToken>,
}

/// What [`Slot::take`] found.
#[derive(Debug)]
pub(super) enum Taken {
    Delivery(Delivery),
    /// Detached: read the log from this token.
    Detached(ResumeToken),
    /// Nothing yet.
    Empty,
}

impl Slot {
    /// The next delivery (or the detachment, once the queue is empty), waiting at most
    /// `timeout` for one.
    pub(super) fn take(&self, timeout: Duration) -> Taken {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock();
        loop {
            if let Some(d) = st.queue.pop_front() {
                return Taken::Delivery(d);
            }
            if let Some(t) = st.detached {
                return Taken::Detached(t);
            }
            if self.cond.wait_until(&mut st, deadline).timed_out() {
                return match (st.queue.pop_front(), st.detached) {
                    (Some(d), _) => Taken::Delivery(d),
                    (None, Some(t)) => Taken::Detached(t),
                    (None, None) => Taken::Empty,
                };
            }
        }
    }

    /// Queues `d`; `false` when the queue is full (nothing queued).
    fn offer(&self, d: Delivery) -> bool {
        let mut st = self.state.lock();
        if st.queue.len() >= HANDOFF_CAPACITY {
            return false;
        }
        st.queue.push_back(d);
        drop(st);
        self.cond.notify_one();
        true
    }

    fn detach(&self, resume: ResumeToken) {
        self.state.lock().detached = Some(resume);
        self.cond.notify_all();
    }
}

/// How a join went.
#[derive(Debug)]
pub(super) enum Joined {
    /// The hub delivers everything from the subscriber's position on.
    Now,
    /// The hub delivers from this position on; the subscriber reads up to it by itself.
    After(u64),
}

#[derive(Debug)]
struct Member {
    slot: Arc<Slot>,
    group: String,
    /// The hub serves it from this position on (it joined while the hub was behind).
    start_at: u64,
    /// With a filter: a checkpoint is due when the hub has scanned this many events.
    due: u64,
    every: u64,
    /// Events skipped since its last delivery when it joined (counted until it is served).
    skipped: u64,
    filtered: bool,
}

#[derive(Debug)]
struct Group {
    filter: Option<Filter>,
    members: Vec<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// Everything before it was handed out (a frame boundary); `None` while idle.
    position: Option<u64>,
    running: bool,
    next_id: u64,
    members: FxHashMap<u64, Member>,
    groups: FxHashMap<String, Group>,
    /// Groups whose filter is a set of exact event types, by type.
    by_type: FxHashMap<String, Vec<String>>,
    /// Groups matched by testing their filter.
    tested: Vec<String>,
    /// Events the hub has scanned.
    scanned: u64,
    /// Checkpoints due, earliest first (entries whose member's `due` moved on are stale).
    due: BinaryHeap<Reverse<(u64, u64)>>,
}

/// The per-store hub.
#[derive(Debug, Default)]
pub(super) struct Hub {
    state: Mutex<State>,
    /// Wakes the idle hub when a subscriber joins.
    joined: Condvar,
}

impl Hub {
    /// The hub of `store`.
    pub(super) fn of(store: &Store) -> Arc<Hub> {
        let any = store.subscription_hub(|| Arc::new(Hub::default()));
        any.downcast::<Hub>()
            .unwrap_or_else(|_| Arc::new(Hub::default()))
    }

    /// Joins subscriber `filter` (checkpoints every `every` skipped events, `skipped`
    /// skipped so far), which has read everything before `at` (a frame boundary).
    /// `None` when the hub's thread cannot be started (the subscriber reads by itself).
    pub(super) fn join(
        self: &Arc<Self>,
        store: &Store,
        at: u64,
        filter: &Filter,
        every: u64,
        skipped: u64,
    ) -> Option<(u64, Arc<Slot>, Joined)> {
        let mut st = self.state.lock();
        if !st.running {
            let hub = Arc::clone(self);
            store
                .spawn_worker("streamlog-hub", move |store, stop| hub.run(&store, &*stop))
                .ok()?;
            st.running = true;
        }
        let id = st.next_id;
        st.next_id += 1;
        let slot = Arc::new(Slot::default());
        let key = format!("{filter:?}");
        let mut member = Member {
            slot: Arc::clone(&slot),
            group: key.clone(),
            start_at: at,
            due: 0,
            every: every.max(1),
            skipped,
            filtered: true,
        };
        let joined = match st.position {
            Some(p) if !st.members.is_empty() && p > at => {
                member.start_at = p;
                Joined::After(p)
            }
            // Behind `at`: the hub passes over this member until it gets there.
            Some(p) if !st.members.is_empty() && p < at => Joined::Now,
            _ => {
                st.position = Some(at);
                Joined::Now
            }
        };
        st.ensure_group(&key, filter);
        st.activate(id, member);
        drop(st);
        self.joined.notify_all();
        Some((id, slot, joined))
    }

    /// Subscriber `id` leaves (its subscription was dropped, or it was detached).
    pub(super) fn leave(&self, id: u64) {
        self.state.lock().remove(id);
    }

    /// The hub's thread: follows the log while anyone is joined, until the store closes.
    fn run(&self, store: &StoreRef, stop: &(dyn Fn() -> bool + Send + Sync)) {
        loop {
            if stop() {
                self.detach_all();
                return;
            }
            let position = {
                let mut st = self.state.lock();
                match st.position {
                    Some(p) if !st.members.is_empty() => Some(p),
                    _ => {
                        st.position = None;
                        self.joined.wait_for(&mut st, HUB_WAIT);
                        None
                    }
                }
            };
            let Some(position) = position else {
                if store.upgrade().is_none() {
                    // Closed (or every handle gone): nobody is left to serve.
                    self.detach_all();
                    return;
                }
                continue;
            };
            if !store.wait_visible_beyond(position, HUB_WAIT) {
                if store.upgrade().is_none() {
                    self.detach_all();
                    return;
                }
                continue;
            }
            let Some(handle) = store.upgrade() else {
                self.detach_all();
                return;
            };
            let reader = handle.read_all(ResumeToken::at(crate::store::Position(position)));
            drop(handle);
            let mut st = self.state.lock();
            if st.position != Some(position) {
                // Everyone left and someone joined elsewhere meanwhile: start again there.
                continue;
            }
            let mut last = ResumeToken::at(crate::store::Position(position));
            let result = reader.and_then(|mut reader| {
                reader.for_each_view(|v| {
                    st.dispatch(&v);
                    last = v.resume_token();
                    std::ops::ControlFlow::Continue(())
                })?;
                Ok(reader.next_position().0)
            });
            match result {
                Ok(end) => st.position = Some(end),
                Err(_) => {
                    // Each subscriber meets the error by itself, from where it stands.
                    st.detach_all(last);
                    st.position = None;
                }
            }
        }
    }

    fn detach_all(&self) {
        let mut st = self.state.lock();
        let at = ResumeToken::at(crate::store::Position(st.position.unwrap_or(0)));
        st.detach_all(at);
        st.position = None;
    }
}

impl State {
    /// The group of subscribers with filter `filter` (`key` is its text), indexed by what
    /// the filter looks at.
    fn ensure_group(&mut self, key: &str, filter: &Filter) {
        if self.groups.contains_key(key) {
            return;
        }
        self.groups.insert(
            key.to_string(),
            Group {
                filter: Some(filter.clone()),
                members: Vec::new(),
            },
        );
        match filter.exact_event_types() {
            Some(types) => {
                for t in types {
                    self.by_type
                        .entry(t.clone())
                        .or_default()
                        .push(key.to_string());
                }
            }
            None => self.tested.push(key.to_string()),
        }
    }

    /// Serves `member` from its start on: its group lists it, its checkpoint is scheduled.
    fn activate(&mut self, id: u64, mut member: Member) {
        member.due = self
            .scanned
            .saturating_add(member.every.saturating_sub(member.skipped).max(1));
        self.due.push(Reverse((member.due, id)));
        if let Some(g) = self.groups.get_mut(&member.group) {
            g.members.push(id);
        }
        self.members.insert(id, member);
    }

    fn remove(&mut self, id: u64) {
        let Some(m) = self.members.remove(&id) else {
            return;
        };
        let empty = match self.groups.get_mut(&m.group) {
            Some(g) => {
                g.members.retain(|&x| x != id);
                g.members.is_empty()
            }
            None => false,
        };
        if empty && let Some(g) = self.groups.remove(&m.group) {
            match g.filter.as_ref().and_then(Filter::exact_event_types) {
                Some(types) => {
                    for t in types {
                        if let Some(keys) = self.by_type.get_mut(t) {
                            keys.retain(|k| *k != m.group);
                            if keys.is_empty() {
                                self.by_type.remove(t);
                            }
                        }
                    }
                }
                None => self.tested.retain(|k| *k != m.group),
            }
        }
        if self.members.is_empty() {
            self.due.clear();
        }
    }

    /// Lets every member go, to resume at `at` (or at its own start when later).
    fn detach_all(&mut self, at: ResumeToken) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for id in ids {
            if let Some(m) = self.members.get(&id) {
                let resume = if m.start_at > at.position.0 {
                    ResumeToken::at(crate::store::Position(m.start_at))
                } else {
                    at
                };
                m.slot.detach(resume);
            }
            self.remove(id);
        }
    }

    /// Hands event `v` to the members whose filter passes it, and the checkpoints it
    /// makes due.
    fn dispatch(&mut self, v: &EventView<'_>) {
        self.scanned += 1;
        let mut matched: Vec<u64> = Vec::new();
        if let Some(keys) = self.by_type.get(v.event_type) {
            for k in keys {
                if let Some(g) = self.groups.get(k) {
                    matched.extend_from_slice(&g.members);
                }
            }
        }
        for k in &self.tested {
            if let Some(g) = self.groups.get(k)
                && g.filter.as_ref().is_none_or(|f| f.matches_event(v))
            {
                matched.extend_from_slice(&g.members);
            }
        }
        // Where a member that cannot take this event resumes: at this event.
        let here = ResumeToken {
            position: v.position,
            skip: v.append_index,
        };
        let mut dropped = Vec::new();
        if !matched.is_empty() {
            let event: RecordedEvent = v.to_recorded();
            for id in matched {
                let Some(m) = self.members.get_mut(&id) else {
                    continue;
                };
                if m.start_at > v.position.0 {
                    continue;
                }
                if m.slot.offer(Delivery::Event(event.clone())) {
                    m.due = self.scanned.saturating_add(m.every);
                    self.due.push(Reverse((m.due, id)));
                } else {
                    m.slot.detach(here);
                    dropped.push(id);
                }
            }
        }
        while let Some(&Reverse((due, id))) = self.due.peek() {
            if due > self.scanned {
                break;
            }
            self.due.pop();
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            if m.due != due || !m.filtered || dropped.contains(&id) {
                continue; // stale: a delivery moved it on
            }
            if m.start_at > v.position.0 {
                // Not served yet (the hub is behind its start): its count starts there.
                m.due = self
                    .scanned
                    .saturating_add(m.every.saturating_sub(m.skipped).max(1));
                self.due.push(Reverse((m.due, id)));
                continue;
            }
            if m.slot.offer(Delivery::Checkpoint(v.resume_token())) {
                m.due = self.scanned.saturating_add(m.every);
                self.due.push(Reverse((m.due, id)));
            } else {
                m.slot.detach(here);
                dropped.push(id);
            }
        }
        for id in dropped {
            self.remove(id);
        }
    }
}
