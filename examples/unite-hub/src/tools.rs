//! What the CLI and the admin routes share: connectivity checks, warming, the hot-key list.

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::{Config, DbTls};

/// One step of `unite-hub check`.
#[derive(Debug, Clone)]
pub struct CheckLine {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// How long it took.
    pub elapsed: Duration,
    /// The answer, or why it failed (secrets never included).
    pub detail: String,
}

impl fmt::Display for CheckLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:<28} {:>9.2} ms  {}",
            if self.ok { "PASS" } else { "FAIL" },
            self.name,
            self.elapsed.as_secs_f64() * 1e3,
            self.detail
        )
    }
}

async fn step<T, E: fmt::Display>(
    lines: &mut Vec<CheckLine>,
    name: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
    describe: impl FnOnce(&T) -> String,
) -> Option<T> {
    let start = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), fut).await;
    let elapsed = start.elapsed();
    let (ok, detail, value) = match result {
        Ok(Ok(v)) => (true, describe(&v), Some(v)),
        Ok(Err(e)) => (false, e.to_string(), None),
        Err(_) => (false, "no answer within 5 s".to_owned(), None),
    };
    lines.push(CheckLine {
        name: name.to_owned(),
        ok,
        elapsed,
        detail,
    });
    value
}

/// Checks Postgres (connect, `SELECT 1`, TLS) and Redis (PING, SET/GET, INCR, TTL, EXISTS,
/// DEL, a pipeline), each step timed.
pub async fn check(config: &Config) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    check_postgres(config, &mut lines).await;
    match &config.redis_url {
        Some(url) => check_redis(url, config, &mut lines).await,
        None => lines.push(CheckLine {
            name: "redis".into(),
            ok: true,
            elapsed: Duration::ZERO,
            detail: "REDIS_URL not set: in-memory cache and local limits".into(),
        }),
    }
    lines
}

async fn check_postgres(config: &Config, lines: &mut Vec<CheckLine>) {
    let pool_config = match crate::state::pool_config(config) {
        Ok(c) => c,
        Err(e) => {
            lines.push(CheckLine {
                name: "postgres config".into(),
                ok: false,
                elapsed: Duration::ZERO,
                detail: e.to_string(),
            });
            return;
        }
    };
    let Some(pool) = step(
        lines,
        "postgres connect",
        unite_pool::Pool::connect(pool_config),
        |_| unite_telemetry::redact_url(&config.database_url).into_owned(),
    )
    .await
    else {
        return;
    };
    step(
        lines,
        "postgres SELECT 1",
        pool.query_one("SELECT 1", &[]),
        |r| format!("{}", r.get::<_, i32>(0)),
    )
    .await;
    let tls = match config.database_tls {
        DbTls::Disable => "disable (plaintext)",
        DbTls::Require => "require (encrypted, server not verified)",
        DbTls::VerifyFull => "verify-full (certificate and host name verified)",
    };
    step(
        lines,
        "postgres TLS",
        pool.query_one(
            "SELECT coalesce((SELECT ssl::text || ' ' || coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()), 'false')",
            &[],
        ),
        |r| format!("mode {tls}; ssl in use: {}", r.get::<_, String>(0)),
    )
    .await;
}

async fn check_redis(url: &str, config: &Config, lines: &mut Vec<CheckLine>) {
    use fred::prelude::*;
    let start = Instant::now();
    let client = match crate::state::redis_client(url, config).await {
        Ok(c) => c,
        Err(e) => {
            lines.push(CheckLine {
                name: "redis connect".into(),
                ok: false,
                elapsed: start.elapsed(),
                detail: e.to_string(),
            });
            return;
        }
    };
    let tls = if url.starts_with("rediss://") {
        "TLS"
    } else {
        "plaintext"
    };
    lines.push(CheckLine {
        name: "redis connect".into(),
        ok: client.is_connected(),
        elapsed: start.elapsed(),
        detail: format!("{} ({tls})", unite_telemetry::redact_url(url)),
    });
    // One hash tag for both keys: the two-key DEL below stays in one slot on Redis Cluster.
    let key = format!(
        "{}check:{{{}}}",
        config.cache_namespace,
        rand::random::<u64>()
    );
    let counter = format!("{key}:n");
    step(
        lines,
        "redis PING",
        client.ping::<String>(None),
        Clone::clone,
    )
    .await;
    step(
        lines,
        "redis SET",
        client.set::<(), _, _>(&key, "ok", Some(Expiration::EX(60)), None, false),
        |()| "OK".into(),
    )
    .await;
    step(
        lines,
        "redis GET",
        client.get::<Option<String>, _>(&key),
        |v| format!("{v:?}"),
    )
    .await;
    step(
        lines,
        "redis INCR",
        client.incr::<i64, _>(&counter),
        ToString::to_string,
    )
    .await;
    step(lines, "redis TTL", client.ttl::<i64, _>(&key), |t| {
        format!("{t} s")
    })
    .await;
    step(lines, "redis EXISTS", client.exists::<i64, _>(&key), |n| {
        n.to_string()
    })
    .await;
    let pipeline = async {
        let p = client.pipeline();
        let _: () = p
            .set(&key, "piped", Some(Expiration::EX(60)), None, false)
            .await?;
        let _: () = p.get(&key).await?;
        let _: () = p.incr(&counter).await?;
        p.all::<(String, String, i64)>().await
    };
    step(
        lines,
        "redis pipeline (3 commands)",
        pipeline,
        |(a, b, c)| format!("{a} {b} {c}"),
    )
    .await;
    step(
        lines,
        "redis DEL",
        client.del::<i64, _>(vec![key.clone(), counter.clone()]),
        |n| format!("{n} deleted"),
    )
    .await;
    let _ = client.quit().await;
}

// ---------------------------------------------------------------------------------------------
// Warming: one path for start-up (background), the admin route and the CLI.

use tokio::sync::watch;
use unite_warm::{
    CancellationToken, HotKeyStore, KeyListSource, PostgresSource, WarmItem, WarmProgress,
    WarmSummary, Warmer,
};

use crate::db::{self, Plan, SessionInfo};
use crate::routes::contacts::contact_key;
use crate::routes::sessions::session_key;
use crate::state::AppState;

/// How many hot keys are saved for the next run.
const HOT_KEYS_SAVED: usize = 1000;

/// The state of warming, shared by the background run and the admin routes.
#[derive(Debug, Default)]
pub struct WarmState {
    running: bool,
    cancel: CancellationToken,
    progress: Option<watch::Receiver<WarmProgress>>,
    summaries: Vec<WarmSummary>,
    errors: Vec<String>,
}

fn hot_key_store(state: &AppState) -> Option<HotKeyStore> {
    state.redis.as_ref().map(|client| {
        HotKeyStore::new(
            client.clone(),
            format!("{}hotkeys", state.config.cache_namespace),
        )
    })
}

/// Saves the detector's hottest keys to Redis, for the next run's warm-up.
pub async fn save_hotkeys(state: &AppState) -> anyhow::Result<usize> {
    match hot_key_store(state) {
        Some(store) => Ok(store.save_top(&state.hotkeys, HOT_KEYS_SAVED).await?),
        None => Ok(0),
    }
}

/// Live sessions, newest first, streamed from Postgres into the cache.
fn sessions_source(state: &AppState) -> PostgresSource<SessionInfo> {
    let cap = state.config.cache_ttl;
    PostgresSource::new(
        state.pool.clone(),
        "SELECT s.token_hash, s.user_id, u.plan,
                extract(epoch FROM s.expires_at)::bigint AS expires_at,
                extract(epoch FROM s.expires_at - now())::float8 AS remaining
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.expires_at > now() + interval '1 second'
         ORDER BY s.created_at DESC LIMIT 100000",
        move |row| {
            let hash: Vec<u8> = row.try_get("token_hash")?;
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| anyhow::anyhow!("a session hash is not 32 bytes"))?;
            let plan: &str = row.try_get("plan")?;
            let plan = match plan {
                "pro" => Plan::Pro,
                "enterprise" => Plan::Enterprise,
                _ => Plan::Free,
            };
            let remaining: f64 = row.try_get("remaining")?;
            let ttl = Duration::from_secs_f64(remaining.max(1.0)).min(cap);
            Ok::<_, anyhow::Error>(WarmItem::new(
                session_key(&hash),
                SessionInfo {
                    user_id: row.try_get("user_id")?,
                    plan,
                    expires_at: row.try_get("expires_at")?,
                },
                ttl,
            ))
        },
    )
    .named("sessions")
    .count_query("SELECT count(*) FROM sessions WHERE expires_at > now() + interval '1 second'")
}

/// Runs every warm-up step in order (sessions from Postgres, then the keys that were hot in
/// the previous run), reporting each step's progress receiver to `on_step`.
pub async fn warm_all(
    state: &AppState,
    cancel: CancellationToken,
    mut on_step: impl FnMut(watch::Receiver<WarmProgress>),
) -> (Vec<WarmSummary>, Vec<String>) {
    let warmer = match Warmer::builder(state.cache.clone())
        .throttle_on_pool(&state.pool)
        .build()
    {
        Ok(w) => w,
        Err(e) => return (Vec::new(), vec![e.to_string()]),
    };
    let mut summaries = Vec::new();
    let mut errors = Vec::new();
    let mut finish = |r: Result<WarmSummary, unite_warm::WarmError>| match r {
        Ok(s) => summaries.push(s),
        Err(e) => errors.push(e.to_string()),
    };

    let handle = warmer.spawn_with_cancel(sessions_source(state), cancel.child_token());
    on_step(handle.progress());
    finish(handle.wait().await);

    if let Some(store) = hot_key_store(state) {
        match store.load().await {
            Ok(keys) if !keys.is_empty() && !cancel.is_cancelled() => {
                let (session_keys, contact_keys): (Vec<String>, Vec<String>) =
                    keys.into_iter().partition(|k| k.starts_with("session:"));
                let pool = state.pool.clone();
                let sessions = KeyListSource::new(session_keys, move |key: String| {
                    let pool = pool.clone();
                    async move {
                        let Some(hash) = key
                            .strip_prefix("session:v1:")
                            .and_then(|h| hex::decode(h).ok())
                        else {
                            return Ok(None);
                        };
                        Ok::<_, anyhow::Error>(db::session(&pool, &hash).await?)
                    }
                })
                .named("hot sessions")
                .ttl(state.config.cache_ttl);
                let handle = warmer.spawn_with_cancel(sessions, cancel.child_token());
                on_step(handle.progress());
                finish(handle.wait().await);

                let pool = state.pool.clone();
                let contacts = KeyListSource::new(contact_keys, move |key: String| {
                    let pool = pool.clone();
                    async move {
                        let Some((owner, id)) = key
                            .strip_prefix("contact:v1:")
                            .and_then(|rest| rest.split_once(':'))
                            .and_then(|(o, i)| {
                                Some((o.parse::<i64>().ok()?, i.parse::<i64>().ok()?))
                            })
                        else {
                            return Ok(None);
                        };
                        debug_assert_eq!(contact_key(owner, id), key);
                        Ok::<_, anyhow::Error>(db::contact_get(&pool, owner, id).await?)
                    }
                })
                .named("hot contacts")
                .ttl(state.config.cache_ttl);
                let handle = warmer.spawn_with_cancel(contacts, cancel.child_token());
                on_step(handle.progress());
                finish(handle.wait().await);
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("hot-key list: {e}")),
        }
    }
    (summaries, errors)
}

/// Starts warming in the background unless a run is going; whether it started one.
pub fn start_warm(state: &AppState) -> bool {
    let cancel = {
        let Ok(mut warm) = state.warm.lock() else {
            return false;
        };
        if warm.running {
            return false;
        }
        *warm = WarmState {
            running: true,
            ..WarmState::default()
        };
        warm.cancel.clone()
    };
    let state = state.clone();
    tokio::spawn(async move {
        let (summaries, errors) = warm_all(&state, cancel, |rx| {
            if let Ok(mut warm) = state.warm.lock() {
                warm.progress = Some(rx);
            }
        })
        .await;
        for s in &summaries {
            tracing::info!(source = %s.source, written = s.written, errors = s.errors, "warm-up step done");
        }
        for e in &errors {
            tracing::warn!(error = %e, "warm-up step failed");
        }
        if let Ok(mut warm) = state.warm.lock() {
            warm.running = false;
            warm.summaries = summaries;
            warm.errors = errors;
        }
    });
    true
}

/// Stops a running warm-up (at shutdown).
pub fn cancel_warm(state: &AppState) {
    if let Ok(warm) = state.warm.lock() {
        warm.cancel.cancel();
    }
}

/// The warm-up's state as JSON: running, the current step's progress, finished steps.
pub fn warm_progress(state: &AppState) -> serde_json::Value {
    let Ok(warm) = state.warm.lock() else {
        return serde_json::Value::Null;
    };
    let current = warm.progress.as_ref().map(|rx| rx.borrow().clone());
    serde_json::json!({
        "running": warm.running,
        "current": current,
        "finished": warm.summaries,
        "errors": warm.errors,
    })
}

/// The CLI's warm-up: the same steps, drawn as progress bars, then a summary.
pub async fn warm_with_progress_bar(state: &AppState) -> anyhow::Result<String> {
    use indicatif::{ProgressBar, ProgressStyle};
    let style =
        ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} {per_sec} {msg}")?
            .progress_chars("=> ");
    let mut drawers = Vec::new();
    let (summaries, errors) = warm_all(state, CancellationToken::new(), |mut rx| {
        let bar = ProgressBar::new(0).with_style(style.clone());
        drawers.push(tokio::spawn(async move {
            loop {
                {
                    let p = rx.borrow_and_update();
                    bar.set_prefix(p.source.clone());
                    bar.set_length(p.total.unwrap_or(p.done));
                    bar.set_position(p.done);
                    bar.set_message(format!("errors {}", p.errors));
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
            bar.finish();
        }));
    })
    .await;
    for d in drawers {
        let _ = d.await;
    }
    let mut out = String::new();
    for s in &summaries {
        out.push_str(&format!(
            "{}: {} written, {} errors, {} batches ({} failed), {:.0} per second\n",
            s.source, s.written, s.errors, s.batches, s.failed_batches, s.rate_per_sec
        ));
    }
    for e in &errors {
        out.push_str(&format!("failed: {e}\n"));
    }
    if !errors.is_empty() {
        anyhow::bail!("{out}");
    }
    Ok(out)
}
