//! Decisions reserved from the shared budget, spent without a round trip
//! ([`SharedConfig::reserve_max`](crate::SharedConfig::reserve_max) above 1).
//!
//! A key this instance decides often asks Redis for several decisions at once (the script
//! grants as many as the budget holds, at most the number asked). Their Redis state is already
//! spent, so the instances together never allow more than the quota; what lapses unspent is
//! lost. The size adapts per key: it doubles while a reservation is spent within its time,
//! halves when one lapses with decisions left, and drops to 1 as soon as Redis grants fewer
//! than asked (the budget is nearly spent, so decisions go back to one a round trip). When a
//! quarter is left, one decision refills ahead while the rest keep serving the key, so a busy
//! key does not stall on its refill; what is left then joins the new reservation, so a
//! decision is spent at most twice `lasts` after Redis counted it.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::{Decision, DecisionSource, EndpointClass, Quota, Subject, Tier};

type FastState = foldhash::fast::RandomState;

/// One key's reservation.
#[derive(Debug)]
struct Reservation {
    /// Decisions left to spend.
    left: u32,
    /// Until when they may be spent.
    until: Instant,
    /// How many the next round trip asks for.
    size: u32,
    /// The last round trip was granted fewer than it asked: do not grow on the next.
    short: bool,
    /// A reserving round trip is on its way until then (or until it answers): meanwhile other
    /// decisions of the key ask for one each, so concurrent requests never stack reservations.
    pending_until: Instant,
    /// The quota and policy they were reserved under: a changed override spends none of them.
    quota: Quota,
    policy: &'static str,
    /// The shared budget's answer when they were reserved (for the headers).
    remaining: u32,
    reset_at: Instant,
}

/// The reservations of one limiter, one map per endpoint class (looked up by `&Subject`).
#[derive(Debug)]
pub(crate) struct Reservations {
    maps: [DashMap<Subject, Reservation, FastState>; EndpointClass::ALL.len()],
    max: u32,
    lasts: Duration,
    max_keys: usize,
}

/// What a decision without a reserved one to spend should ask Redis for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Want {
    /// Decisions to ask for.
    pub(crate) n: u32,
    /// Whether this round trip refills the key's reservation (only one at a time does).
    leader: bool,
}

impl Want {
    /// One decision, and nothing to record.
    const ONE: Want = Want {
        n: 1,
        leader: false,
    };

    const fn refill(n: u32) -> Want {
        Want { n, leader: true }
    }
}

impl Reservations {
    pub(crate) fn new(max: u32, lasts: Duration, max_keys: usize) -> Self {
        Self {
            maps: std::array::from_fn(|_| DashMap::with_hasher(FastState::default())),
            max: max.max(1),
            lasts,
            max_keys,
        }
    }

    /// The most one reservation of `quota` may hold: `reserve_max`, and at most 1/16 of the
    /// burst, so small quotas stay exact.
    fn cap(&self, quota: Quota) -> u32 {
        self.max.min(quota.burst().get() / 16).max(1)
    }

    /// Spends one reserved decision of `subject` in `class` under `quota`, or says how many
    /// the round trip should ask for.
    pub(crate) fn take(
        &self,
        subject: &Subject,
        tier: Tier,
        class: EndpointClass,
        quota: Quota,
        policy: &'static str,
    ) -> Result<Decision, Want> {
        let cap = self.cap(quota);
        if cap == 1 {
            // A quota too small to reserve from: exact decisions, and no state kept.
            return Err(Want::ONE);
        }
        let map = &self.maps[class.index()];
        let Some(mut r) = map.get_mut(subject) else {
            return Err(Want::refill(1));
        };
        let now = Instant::now();
        if r.quota != quota || r.policy != policy {
            // An override changed the quota: nothing reserved under the old one is spent.
            r.left = 0;
            r.size = 1;
            r.short = false;
            r.quota = quota;
            r.policy = policy;
            r.pending_until = now + self.lasts;
            return Err(Want::refill(1));
        }
        if r.left > 0 && now < r.until {
            if r.left <= r.size / 4 && now >= r.pending_until && !r.short {
                // A quarter left: this decision refills ahead (through Redis), while the rest
                // keep serving the key's other requests, so a busy key does not run dry.
                r.size = r.size.saturating_mul(2).min(cap);
                r.pending_until = now + self.lasts;
                // Topped up to the new size: what this instance holds never exceeds it.
                return Err(Want::refill(r.size.saturating_sub(r.left).max(1)));
            }
            r.left -= 1;
            return Ok(Decision {
                allowed: true,
                limit: quota.limit().get(),
                window: quota.window(),
                remaining: r.remaining.saturating_add(r.left),
                reset: r.reset_at.saturating_duration_since(now),
                retry_after: None,
                tier,
                class,
                policy,
                source: DecisionSource::Reserved,
                strikes: 0,
                blocked: false,
            });
        }
        if now < r.pending_until {
            return Err(Want::ONE);
        }
        r.size = if r.left > 0 {
            // Lapsed with decisions left: this key is not that busy.
            (r.size / 2).max(1)
        } else if now < r.until && !r.short {
            // Spent in time: ask for more.
            r.size.saturating_mul(2).min(cap)
        } else {
            r.size.min(cap)
        };
        r.left = 0;
        r.pending_until = now + self.lasts;
        Err(Want::refill(r.size))
    }

    /// Records what a round trip that asked for `want` decisions under `quota` granted; the
    /// decision of the request that asked is `decision`, one of the granted ones.
    pub(crate) fn granted(
        &self,
        subject: &Subject,
        quota: Quota,
        want: Want,
        granted: u32,
        decision: &Decision,
    ) {
        if !want.leader {
            return;
        }
        let map = &self.maps[decision.class.index()];
        let now = Instant::now();
        let cap = self.cap(quota);
        match map.get_mut(subject) {
            Some(mut r) => {
                if r.quota != quota || r.policy != decision.policy {
                    // Asked under a quota an override has since replaced.
                    return;
                }
                r.pending_until = now;
                // Fewer than asked: the budget is nearly spent (or refused), so one decision a
                // round trip until a round trip gets all it asked for.
                r.short = granted < want.n;
                if r.short {
                    r.size = 1;
                }
                r.left = r.left.saturating_add(granted.saturating_sub(1)).min(cap);
                r.until = now + self.lasts;
                r.remaining = decision.remaining;
                r.reset_at = now + decision.reset;
            }
            None => {
                if !decision.allowed || map.len() >= self.max_keys {
                    return;
                }
                map.insert(
                    subject.clone(),
                    Reservation {
                        left: granted.saturating_sub(1).min(cap),
                        until: now + self.lasts,
                        size: 1,
                        short: granted < want.n,
                        pending_until: now,
                        quota,
                        policy: decision.policy,
                        remaining: decision.remaining,
                        reset_at: now + decision.reset,
                    },
                );
            }
        }
    }

    /// Drops reservations idle for a second past their end.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        for map in &self.maps {
            map.retain(|_, r| now < r.until + self.lasts + Duration::from_secs(1));
        }
    }

    /// Keys holding a reservation.
    pub(crate) fn len(&self) -> usize {
        self.maps.iter().map(DashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn quota(n: u32) -> Quota {
        Quota::per_hour(NonZeroU32::new(n).unwrap())
    }

    fn shared_decision(q: Quota, remaining: u32) -> Decision {
        Decision {
            allowed: true,
            limit: q.limit().get(),
            window: q.window(),
            remaining,
            reset: Duration::from_secs(1),
            retry_after: None,
            tier: Tier::Free,
            class: EndpointClass::Default,
            policy: "default",
            source: DecisionSource::Shared,
            strikes: 0,
            blocked: false,
        }
    }

    fn take(r: &Reservations, s: &Subject, q: Quota) -> Result<Decision, Want> {
        r.take(s, Tier::Free, EndpointClass::Default, q, "default")
    }

    #[test]
    fn a_busy_key_doubles_up_to_the_cap_and_spends_what_it_was_granted() {
        let r = Reservations::new(64, Duration::from_secs(60), 100);
        let s = Subject::user("busy");
        let q = quota(16 * 40); // cap: min(64, 640 / 16) = 40
        let mut asked = Vec::new();
        let mut reserved = 0;
        for _ in 0..200 {
            match take(&r, &s, q) {
                Ok(d) => {
                    assert_eq!(d.source, DecisionSource::Reserved);
                    reserved += 1;
                }
                Err(want) => {
                    asked.push(want.n);
                    r.granted(&s, q, want, want.n, &shared_decision(q, 100));
                }
            }
        }
        // Doubling sizes, topped up ahead when a quarter is left: the asks grow, then stay
        // within the cap.
        assert!(asked[..6].windows(2).all(|w| w[0] < w[1]), "{asked:?}");
        assert!(asked.iter().all(|&w| w <= 40), "{asked:?}");
        assert!(asked.iter().any(|&w| w >= 28), "{asked:?}");
        assert_eq!(reserved + asked.len(), 200);
        let asked_total: u32 = asked.iter().sum();
        assert!(asked_total >= 200, "never more decisions than were granted");
    }

    #[test]
    fn a_short_grant_or_a_refusal_goes_back_to_one_a_round_trip() {
        let r = Reservations::new(64, Duration::from_secs(60), 100);
        let s = Subject::user("near-the-limit");
        let q = quota(10_000);
        // Spend whatever is reserved, then refill in full, six times over.
        let mut asked = Vec::new();
        while asked.len() < 6 {
            if let Err(want) = take(&r, &s, q) {
                asked.push(want.n);
                r.granted(&s, q, want, want.n, &shared_decision(q, 100));
            }
        }
        assert!(asked.windows(2).all(|w| w[0] < w[1]), "{asked:?}");
        let want_more = loop {
            if let Err(want) = take(&r, &s, q) {
                break want;
            }
        };
        assert!(
            want_more.n > 1 && want_more.n <= 64,
            "{asked:?} then {}",
            want_more.n
        );
        let want = want_more;
        r.granted(&s, q, want, 1, &shared_decision(q, 0));
        // Only one was granted (this request's); what was left from before is spent, then one
        // decision a round trip.
        let want = loop {
            if let Err(want) = take(&r, &s, q) {
                break want;
            }
        };
        assert_eq!(want.n, 1);
    }

    #[test]
    fn small_quotas_and_changed_quotas_reserve_nothing() {
        let r = Reservations::new(64, Duration::from_secs(60), 100);
        let s = Subject::user("small");
        let q = quota(20); // 20 / 16 = 1
        for _ in 0..10 {
            let want = take(&r, &s, q).expect_err("nothing is ever reserved");
            assert_eq!(want.n, 1);
            r.granted(&s, q, want, 1, &shared_decision(q, 5));
        }
        let big = quota(10_000);
        let t = Subject::user("changed");
        let want = take(&r, &t, big).unwrap_err();
        r.granted(&t, big, want, 1, &shared_decision(big, 100));
        let want = take(&r, &t, big).unwrap_err();
        r.granted(&t, big, want, want.n, &shared_decision(big, 100));
        assert!(want.n > 1);
        // An override changed the quota: the reservation under the old one is not spent.
        let want = take(&r, &t, quota(5_000)).unwrap_err();
        assert_eq!(want.n, 1);
    }

    #[test]
    fn a_lapsed_reservation_is_not_spent_and_halves() {
        let r = Reservations::new(64, Duration::from_millis(1), 100);
        let s = Subject::user("lapsing");
        let q = quota(10_000);
        let want = take(&r, &s, q).unwrap_err();
        r.granted(&s, q, want, 1, &shared_decision(q, 100));
        std::thread::sleep(Duration::from_millis(5));
        // Lapsed with nothing left: the size stays, nothing is reserved.
        let want = take(&r, &s, q).unwrap_err();
        assert_eq!(want.n, 1);
        r.granted(&s, q, Want::refill(8), 8, &shared_decision(q, 100));
        std::thread::sleep(Duration::from_millis(5));
        let want = take(&r, &s, q).expect_err("7 left, but lapsed");
        assert_eq!(want.n, 1, "halved from 1 stays 1");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn the_key_count_is_bounded() {
        let r = Reservations::new(64, Duration::from_secs(60), 3);
        let q = quota(10_000);
        for i in 0..10 {
            let s = Subject::user(format!("u{i}"));
            let want = take(&r, &s, q).unwrap_err();
            r.granted(&s, q, want, 1, &shared_decision(q, 100));
        }
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn while_a_refill_is_on_its_way_others_ask_for_one_and_record_nothing() {
        let r = Reservations::new(64, Duration::from_secs(60), 100);
        let s = Subject::user("concurrent");
        let q = quota(10_000);
        let decide = || take(&r, &s, q);
        let d = |remaining| shared_decision(q, remaining);
        let first = decide().unwrap_err();
        r.granted(&s, q, first, 1, &d(100));
        let leader = decide().unwrap_err();
        assert_eq!(leader, Want::refill(2));
        // Three more arrive before the leader's answer: one each, and nothing recorded.
        let others: Vec<Want> = (0..3).map(|_| decide().unwrap_err()).collect();
        assert!(others.iter().all(|w| *w == Want::ONE), "{others:?}");
        for w in others {
            r.granted(&s, q, w, 1, &d(90));
        }
        r.granted(&s, q, leader, 2, &d(80));
        let spent = decide().expect("the leader's second decision is reserved");
        assert_eq!(spent.source, DecisionSource::Reserved);
        assert_eq!(spent.remaining, 80);
        assert_eq!(decide().unwrap_err(), Want::refill(4));
    }

    #[test]
    fn a_small_quota_keeps_no_state() {
        let r = Reservations::new(64, Duration::from_secs(60), 100);
        let q = Quota::per_minute(NonZeroU32::new(20).unwrap()); // 20 / 16 = 1
        for i in 0..50 {
            let s = Subject::user(format!("ip{i}"));
            let w = r
                .take(&s, Tier::Public, EndpointClass::Default, q, "default")
                .unwrap_err();
            assert_eq!(w, Want::ONE);
        }
        assert_eq!(r.len(), 0);
    }
}
