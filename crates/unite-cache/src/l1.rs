//! The in-process layer: a moka future cache of decoded values, weighed by encoded bytes.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::notification::RemovalCause;

use crate::Clock;
use crate::codec::Times;
use crate::stats::Stats;

/// Fixed per-entry overhead added to the weight (slot, `Arc`s, moka's node), so many tiny
/// entries still count against the byte bound.
const ENTRY_OVERHEAD: u32 = 128;

/// A decoded value, type-erased so one cache holds any value type.
pub(crate) type AnyValue = Arc<dyn Any + Send + Sync>;

/// One L1 entry.
pub(crate) struct Slot {
    /// `None`: a cached "not found".
    pub(crate) value: Option<AnyValue>,
    pub(crate) times: Times,
    /// Kept until here for stale-if-error (expires-at + grace).
    pub(crate) stale_until: u64,
    /// Leaves L1 at this time (stale-until, capped by `l1_ttl` from insertion).
    deadline: u64,
    weight: u32,
    /// Set once a refresh-ahead was started for this entry.
    pub(crate) refreshing: AtomicBool,
}

impl Slot {
    pub(crate) fn new(
        value: Option<AnyValue>,
        times: Times,
        grace: Duration,
        encoded_len: usize,
        now: u64,
        l1_ttl: Option<Duration>,
    ) -> Self {
        let stale_until = times.expires_at.saturating_add(millis(grace));
        let deadline = l1_ttl.map_or(stale_until, |cap| {
            stale_until.min(now.saturating_add(millis(cap)))
        });
        Self {
            value,
            times,
            stale_until,
            deadline,
            weight: u32::try_from(encoded_len).unwrap_or(u32::MAX),
            refreshing: AtomicBool::new(false),
        }
    }

    /// `Some(None)`: a cached "not found"; `Some(Some(v))`: the value; `None`: the slot holds
    /// another type.
    #[inline]
    pub(crate) fn typed<T: Clone + 'static>(&self) -> Option<Option<T>> {
        match &self.value {
            None => Some(None),
            Some(v) => v.downcast_ref::<T>().map(|t| Some(t.clone())),
        }
    }

    pub(crate) fn holds<T: 'static>(&self) -> bool {
        self.value.as_ref().is_none_or(|v| v.is::<T>())
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct SlotExpiry {
    clock: Arc<dyn Clock>,
    tti: Option<Duration>,
}

impl SlotExpiry {
    fn remaining(&self, slot: &Slot) -> Duration {
        Duration::from_millis(slot.deadline.saturating_sub(self.clock.now_millis()))
    }

    fn life(&self, slot: &Slot) -> Duration {
        let remaining = self.remaining(slot);
        self.tti.map_or(remaining, |tti| tti.min(remaining))
    }
}

impl Expiry<String, Arc<Slot>> for SlotExpiry {
    fn expire_after_create(&self, _: &String, slot: &Arc<Slot>, _: Instant) -> Option<Duration> {
        Some(self.life(slot))
    }

    fn expire_after_update(
        &self,
        _: &String,
        slot: &Arc<Slot>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.life(slot))
    }

    fn expire_after_read(
        &self,
        _: &String,
        slot: &Arc<Slot>,
        _: Instant,
        until_expiry: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        if self.tti.is_some() {
            Some(self.life(slot))
        } else {
            until_expiry
        }
    }
}

pub(crate) type L1 = moka::future::Cache<String, Arc<Slot>>;

pub(crate) fn build(
    max_bytes: u64,
    tti: Option<Duration>,
    clock: Arc<dyn Clock>,
    stats: &Arc<Stats>,
) -> L1 {
    let stats = Arc::downgrade(stats);
    moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|key: &String, slot: &Arc<Slot>| {
            u32::try_from(key.len())
                .unwrap_or(u32::MAX)
                .saturating_add(slot.weight)
                .saturating_add(ENTRY_OVERHEAD)
        })
        .expire_after(SlotExpiry { clock, tti })
        .eviction_listener(move |_key, _slot, cause| {
            if let Some(stats) = stats.upgrade() {
                match cause {
                    RemovalCause::Size => stats.eviction(),
                    RemovalCause::Expired => stats.expiration(),
                    RemovalCause::Explicit | RemovalCause::Replaced => {}
                }
            }
        })
        .build()
}
