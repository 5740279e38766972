//! Read replicas: each one's routing state, and the background monitor that measures their
//! replication lag.
//!
//! Lag is measured on connections of the monitor's own (outside the pools, the breakers and
//! the statistics). Each round reads the primary's `pg_current_wal_lsn()`, then on every
//! replica `pg_last_wal_replay_lsn()` and `clock_timestamp() -
//! pg_last_xact_replay_timestamp()`:
//!
//! - a replica that has replayed the primary's position is at lag 0, however old its last
//!   replayed transaction (an idle primary makes the time-based lag grow without bound);
//! - otherwise the lag is the smaller of the time-based lag and the time since the monitor
//!   first saw the primary at a position the replica has not replayed yet (the monitor keeps
//!   the recent positions it saw). The second one is never more than the true lag, and
//!   underestimates it by at most one check interval; it keeps a replica that is a few
//!   milliseconds behind after a long idle period from looking minutes behind.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Mutex as AsyncMutex;
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};
use unite_breaker::State;

use crate::manager::Manager;
use crate::pool::{Node, Shared};
use crate::{Error, Lsn, ReplicaStats};

/// Positions of the primary kept to estimate lag (only increases are kept).
const MAX_SAMPLES: usize = 512;
const UNKNOWN: u64 = u64::MAX;

/// One read replica: its node (pool, breaker, statistics) and what the monitor last found.
pub(crate) struct Replica {
    pub(crate) node: Node,
    /// `<pool>-replica-<index>`.
    pub(crate) name: String,
    /// Redacted URL.
    url: String,
    /// Opens the monitor's connection.
    connector: Manager,
    probe_conn: AsyncMutex<Option<Client>>,
    /// The monitor's verdict (check succeeded, in recovery, lag within the limit), cleared
    /// by a failed read until the next good check.
    healthy: AtomicBool,
    /// Last replayed position (raw), `UNKNOWN` when unknown.
    replay_lsn: AtomicU64,
    /// Lag in microseconds, `UNKNOWN` when unknown.
    lag_micros: AtomicU64,
    last_error: Mutex<Option<String>>,
    lag_gauge: metrics::Gauge,
    healthy_gauge: metrics::Gauge,
}

/// What one check of a replica found.
struct Probe {
    in_recovery: bool,
    replay_lsn: Option<Lsn>,
    time_lag: Option<Duration>,
}

impl Replica {
    pub(crate) fn new(
        node: Node,
        pool: &str,
        name: String,
        url: String,
        connector: Manager,
    ) -> Self {
        metrics::describe_gauge!(
            "unite_pool_replica_lag_seconds",
            metrics::Unit::Seconds,
            "Replication lag of each read replica at the last check."
        );
        metrics::describe_gauge!(
            "unite_pool_replica_healthy",
            "1 when the read replica takes reads, 0 when they go to the primary."
        );
        let labels = [("pool", pool.to_owned()), ("replica", name.clone())];
        Self {
            node,
            url,
            connector,
            probe_conn: AsyncMutex::new(None),
            healthy: AtomicBool::new(false),
            replay_lsn: AtomicU64::new(UNKNOWN),
            lag_micros: AtomicU64::new(UNKNOWN),
            last_error: Mutex::new(Some("not checked yet".to_owned())),
            lag_gauge: metrics::gauge!("unite_pool_replica_lag_seconds", &labels),
            healthy_gauge: metrics::gauge!("unite_pool_replica_healthy", &labels),
            name,
        }
    }

    /// Whether a read may go here now.
    pub(crate) fn routable(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && self.node.breaker.state() != State::Open
    }

    pub(crate) fn replay_lsn(&self) -> Option<Lsn> {
        match self.replay_lsn.load(Ordering::Acquire) {
            UNKNOWN => None,
            raw => Some(Lsn::from_u64(raw)),
        }
    }

    /// A read failed here because of the backend: out of the rotation until the next good
    /// check.
    pub(crate) fn mark_failed(&self, error: &Error) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(replica = %self.name, error = %error, "read replica failed; reads go to the primary");
            self.healthy_gauge.set(0.0);
        }
        self.set_error(Some(format!("read failed: {error}")));
    }

    fn set_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }

    pub(crate) fn stats(&self) -> ReplicaStats {
        let node = self.node.snapshot();
        let lag_ms = match self.lag_micros.load(Ordering::Acquire) {
            UNKNOWN => None,
            #[expect(clippy::cast_precision_loss, reason = "a lag in microseconds")]
            micros => Some(micros as f64 / 1000.0),
        };
        let healthy = self.routable();
        ReplicaStats {
            name: self.name.clone(),
            url: self.url.clone(),
            healthy,
            lag_ms,
            replay_lsn: self.replay_lsn(),
            circuit_state: node.circuit_state,
            last_error: if healthy {
                None
            } else if node.circuit_state == State::Open {
                Some("circuit breaker open".to_owned())
            } else {
                self.last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            },
            total_requests: node.total_requests,
            failures: node.failures,
            success_rate: node.success_rate,
            average_response_time_ms: node.average_response_time_ms,
            p95_response_time_ms: node.p95_response_time_ms,
            size: node.size,
            idle: node.idle,
        }
    }

    /// One check on the monitor's connection (opened again when needed), within `limit`.
    async fn probe(&self, limit: Duration) -> Result<Probe, String> {
        let mut conn = self.probe_conn.lock().await;
        let answer = tokio::time::timeout(limit, async {
            if conn.as_ref().is_none_or(Client::is_closed) {
                *conn = Some(connect(&self.connector).await?);
            }
            let Some(client) = conn.as_ref() else {
                return Err("no connection".to_owned());
            };
            client
                .simple_query(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), \
                     EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())",
                )
                .await
                .map_err(|e| Error::from(e).to_string())
        })
        .await;
        let messages = match answer {
            Ok(Ok(messages)) => messages,
            Ok(Err(e)) => {
                *conn = None;
                return Err(e);
            }
            Err(_) => {
                *conn = None;
                return Err(format!(
                    "lag check timed out after {} ms",
                    limit.as_millis()
                ));
            }
        };
        let row = first_row(&messages).ok_or("lag check returned no row")?;
        Ok(Probe {
            in_recovery: row.get(0) == Some("t"),
            replay_lsn: row.get(1).and_then(|s| s.parse().ok()),
            time_lag: row
                .get(2)
                .and_then(|s| s.parse::<f64>().ok())
                .and_then(|secs| Duration::try_from_secs_f64(secs.max(0.0)).ok()),
        })
    }

    /// Stores a check's verdict; logs changes of health.
    fn apply(&self, verdict: Result<(Option<Lsn>, Option<Duration>), String>, max_lag: Duration) {
        let (healthy, error) = match verdict {
            Ok((replay, lag)) => {
                self.replay_lsn
                    .store(replay.map_or(UNKNOWN, Lsn::as_u64), Ordering::Release);
                let micros = lag.map_or(UNKNOWN, |l| {
                    u64::try_from(l.as_micros()).unwrap_or(UNKNOWN - 1)
                });
                self.lag_micros.store(micros, Ordering::Release);
                self.lag_gauge
                    .set(lag.map_or(f64::NAN, |l| l.as_secs_f64()));
                match lag {
                    Some(l) if l <= max_lag => (true, None),
                    Some(l) => (
                        false,
                        Some(format!(
                            "replication lag {} ms is over the {} ms limit",
                            l.as_millis(),
                            max_lag.as_millis()
                        )),
                    ),
                    None => (false, Some("replication lag unknown".to_owned())),
                }
            }
            Err(e) => {
                self.lag_micros.store(UNKNOWN, Ordering::Release);
                self.lag_gauge.set(f64::NAN);
                (false, Some(e))
            }
        };
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        self.healthy_gauge.set(if healthy { 1.0 } else { 0.0 });
        if was != healthy {
            if healthy {
                tracing::info!(replica = %self.name, "read replica healthy; it takes reads");
            } else {
                tracing::warn!(
                    replica = %self.name,
                    reason = error.as_deref().unwrap_or(""),
                    "read replica skipped; its reads go to the primary"
                );
            }
        }
        self.set_error(error);
    }
}

/// Opens a monitor connection (bounded by the connect timeout inside the manager).
async fn connect(connector: &Manager) -> Result<Client, String> {
    bb8::ManageConnection::connect(connector)
        .await
        .map(|conn| conn.client)
        .map_err(|e| format!("could not connect: {e}"))
}

/// The first data row of a simple query's answer.
pub(crate) fn first_row(messages: &[SimpleQueryMessage]) -> Option<&SimpleQueryRow> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    })
}

/// The monitor's own state: its connection to the primary and the primary positions seen.
pub(crate) struct Monitor {
    primary: Manager,
    primary_conn: Option<Client>,
    samples: VecDeque<(Lsn, Instant)>,
}

impl Monitor {
    pub(crate) fn new(primary: Manager) -> Self {
        Self {
            primary,
            primary_conn: None,
            samples: VecDeque::new(),
        }
    }

    async fn primary_lsn(&mut self, limit: Duration) -> Option<Lsn> {
        let conn = &mut self.primary_conn;
        let connector = &self.primary;
        let answer = tokio::time::timeout(limit, async {
            if conn.as_ref().is_none_or(Client::is_closed) {
                *conn = Some(connect(connector).await.ok()?);
            }
            conn.as_ref()?
                .simple_query("SELECT pg_current_wal_lsn()")
                .await
                .ok()
        })
        .await;
        match answer {
            Ok(Some(messages)) => first_row(&messages)
                .and_then(|row| row.get(0))
                .and_then(|s| s.parse().ok()),
            _ => {
                *conn = None;
                None
            }
        }
    }

    /// One round: the primary's position, then every replica at once.
    pub(crate) async fn tick(&mut self, shared: &Shared) {
        let limit = shared.primary.health_timeout;
        let max_lag = shared.config.replicas.max_lag;
        let primary = self.primary_lsn(limit).await;
        if let Some(lsn) = primary
            && self.samples.back().is_none_or(|(last, _)| lsn > *last)
        {
            if self.samples.len() == MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back((lsn, Instant::now()));
        }
        let mut probes = tokio::task::JoinSet::new();
        for (i, replica) in shared.replicas.iter().enumerate() {
            let replica = Arc::clone(replica);
            probes.spawn(async move { (i, replica.probe(limit).await) });
        }
        let mut results = Vec::with_capacity(shared.replicas.len());
        while let Some(joined) = probes.join_next().await {
            if let Ok(result) = joined {
                results.push(result);
            }
        }
        let now = Instant::now();
        for (i, probe) in results {
            let Some(replica) = shared.replicas.get(i) else {
                continue;
            };
            let verdict = probe.and_then(|p| {
                if p.in_recovery {
                    Ok((p.replay_lsn, self.lag(&p, primary, now)))
                } else {
                    Err("not in recovery: promoted, or not a replica".to_owned())
                }
            });
            replica.apply(verdict, max_lag);
        }
    }

    /// The lag estimate described in the module docs.
    fn lag(&self, probe: &Probe, primary: Option<Lsn>, now: Instant) -> Option<Duration> {
        let Some(replay) = probe.replay_lsn else {
            return probe.time_lag;
        };
        if primary.is_some_and(|p| replay >= p) {
            return Some(Duration::ZERO);
        }
        // Only when the history reaches back to the replica's position: otherwise the oldest
        // sample would date the replica's whole backlog to when the monitor started.
        let covered = self.samples.front().is_some_and(|(lsn, _)| *lsn <= replay);
        let seen_behind = primary.filter(|_| covered).and_then(|_| {
            self.samples
                .iter()
                .find(|(lsn, _)| *lsn > replay)
                .map(|(_, at)| now.saturating_duration_since(*at))
        });
        match (probe.time_lag, seen_behind) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Runs the monitor every `interval` until the pool is dropped.
pub(crate) fn spawn_monitor(mut monitor: Monitor, shared: Weak<Shared>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the builder has just run a round.
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(shared) = shared.upgrade() else {
                break;
            };
            monitor.tick(&shared).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(raw: u64) -> Lsn {
        Lsn::from_u64(raw)
    }

    fn monitor_with(samples: &[(u64, Instant)]) -> Monitor {
        let (failures, _) = tokio::sync::watch::channel(None);
        let tls = crate::tls::connector(&crate::TlsConfig::default()).unwrap();
        let manager = Manager::new(
            "postgres://u@127.0.0.1/d".parse().unwrap(),
            tls,
            Duration::from_secs(1),
            failures,
        );
        let mut m = Monitor::new(manager);
        m.samples = samples.iter().map(|(l, t)| (lsn(*l), *t)).collect();
        m
    }

    #[test]
    fn caught_up_is_zero_however_old_the_last_transaction() {
        let now = Instant::now();
        let m = monitor_with(&[(100, now)]);
        let probe = Probe {
            in_recovery: true,
            replay_lsn: Some(lsn(100)),
            time_lag: Some(Duration::from_secs(3600)),
        };
        assert_eq!(m.lag(&probe, Some(lsn(100)), now), Some(Duration::ZERO));
    }

    #[test]
    fn behind_is_the_smaller_of_time_lag_and_time_seen_behind() {
        let now = Instant::now();
        let m = monitor_with(&[
            (100, now - Duration::from_secs(10)),
            (200, now - Duration::from_millis(300)),
            (300, now),
        ]);
        // Replayed up to 150: WAL first seen 300 ms ago is missing.
        let probe = Probe {
            in_recovery: true,
            replay_lsn: Some(lsn(150)),
            time_lag: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            m.lag(&probe, Some(lsn(300)), now),
            Some(Duration::from_millis(300))
        );
        // A small time lag wins.
        let probe = Probe {
            time_lag: Some(Duration::from_millis(5)),
            ..probe
        };
        assert_eq!(
            m.lag(&probe, Some(lsn(300)), now),
            Some(Duration::from_millis(5))
        );
        // History that starts past the replica's position cannot date its backlog: only the
        // time lag is used.
        let short = monitor_with(&[(200, now - Duration::from_millis(10))]);
        let probe_old = Probe {
            in_recovery: true,
            replay_lsn: Some(lsn(150)),
            time_lag: None,
        };
        assert_eq!(short.lag(&probe_old, Some(lsn(200)), now), None);
        // Without the primary's position only the time lag is known.
        assert_eq!(m.lag(&probe, None, now), Some(Duration::from_millis(5)));
        let probe = Probe {
            in_recovery: true,
            replay_lsn: Some(lsn(150)),
            time_lag: None,
        };
        assert_eq!(m.lag(&probe, None, now), None);
    }
}
