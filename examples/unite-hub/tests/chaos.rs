//! Chaos under load (issue #11): the service in process on loopback, load from tokio tasks with
//! reqwest, and a backing service killed, refused or blackholed in the middle of the run.
//!
//! Every test is bounded: a few seconds of load and a fixed number of tasks. Timing figures
//! are printed (run with `--nocapture` to see them); the assertions count outcomes, and the
//! only time bounds are generous limits on hanging, stated as such.
//!
//! ```text
//! cargo test -p unite-hub --test chaos -- --nocapture --test-threads 1
//! ```

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{ADMIN, Hub, client, connect, create_user, health, sign_in, wait_for};
use tokio::sync::Mutex;
use unite_testkit::{FaultProxy, Mode, RedisServer, TestPostgres, TestRedis};

/// What one request of the load got.
#[derive(Debug, Clone)]
struct Outcome {
    /// Which kind of request (an index into the load's request makers).
    kind: usize,
    /// The status, or `None` when the request failed in transport (or the client timed out).
    status: Option<StatusCode>,
    /// `Retry-After` was present.
    retry_after: bool,
    /// The error envelope's code, when the body was one.
    error_code: Option<String>,
    /// Time from send to the whole body read.
    latency: Duration,
}

/// A request the load sends: a URL and an optional bearer token (a fresh one when `None` and
/// `fresh_token` is set, so it misses every cache).
#[derive(Debug, Clone)]
struct Kind {
    url: String,
    token: Option<String>,
    fresh_token: bool,
}

impl Kind {
    fn cached(url: String, token: &str) -> Self {
        Self {
            url,
            token: Some(token.to_owned()),
            fresh_token: false,
        }
    }

    fn uncached(url: String) -> Self {
        Self {
            url,
            token: None,
            fresh_token: true,
        }
    }
}

/// Runs `tasks` tasks, each sending the kinds in turn, until `stop` is set or `max_per_task`
/// requests were sent by that task.
fn spawn_load(
    c: &reqwest::Client,
    kinds: Vec<Kind>,
    tasks: usize,
    max_per_task: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Outcome>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let kinds = Arc::new(kinds);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let c = c.clone();
        let kinds = kinds.clone();
        let stop = stop.clone();
        let out = out.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..max_per_task {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let kind = (t + i) % kinds.len();
                mine.push(send(&c, &kinds[kind], kind).await);
            }
            out.lock().await.extend(mine);
        }));
    }
    tokio::spawn(async move {
        for h in handles {
            h.await.expect("load task");
        }
        std::mem::take(&mut *out.lock().await)
    })
}

async fn send(c: &reqwest::Client, kind: &Kind, index: usize) -> Outcome {
    let token = match (&kind.token, kind.fresh_token) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => Some(unite_hub::auth::new_token()),
        (None, false) => None,
    };
    let mut req = c.get(&kind.url);
    if let Some(t) = &token {
        req = req.bearer_auth(t);
    }
    let started = Instant::now();
    match req.send().await {
        Ok(r) => {
            let status = r.status();
            let retry_after = r.headers().contains_key("retry-after");
            let body: Value = r.json().await.unwrap_or(Value::Null);
            Outcome {
                kind: index,
                status: Some(status),
                retry_after,
                error_code: body["error"]["code"].as_str().map(str::to_owned),
                latency: started.elapsed(),
            }
        }
        Err(_) => Outcome {
            kind: index,
            status: None,
            retry_after: false,
            error_code: None,
            latency: started.elapsed(),
        },
    }
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[i]
}

/// Makes the users' and loopback's rate limits no obstacle: the limiter is still consulted on
/// every request, but a few seconds of full-speed load from one address is not a quota test.
async fn exempt(c: &reqwest::Client, hub: &Hub, subjects: &[String]) {
    for subject in subjects {
        let r = c
            .put(hub.url("/api/admin/ratelimit/overrides"))
            .bearer_auth(ADMIN)
            .json(&json!({ "subject": subject, "rule": { "kind": "exempt" }, "reason": "chaos test" }))
            .send()
            .await
            .expect("override answered");
        assert_eq!(r.status(), StatusCode::OK, "override for {subject}");
    }
}

/// Redis (a server of the test's own) is killed in the middle of load on the cached session
/// validation, and started again on the same port a second later: no request fails (the cache
/// falls back to memory, the limiter to local limits), and the cache goes back to Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_during_load() {
    let pg = TestPostgres::new().await;
    let mut redis = RedisServer::start()
        .expect("redis-server of the test's own starts (is redis-server installed?)");
    let redis_url = redis.url();
    let hub = Hub::start(
        pg.url(),
        &[
            ("REDIS_URL", &redis_url),
            ("CACHE_NAMESPACE", "chaos-redis:"),
        ],
    )
    .await;
    let c = client();
    let db = connect(pg.url()).await;
    let (uid, email) = create_user(&db, "enterprise").await;
    let token = sign_in(&c, &hub, &email).await;
    exempt(&c, &hub, &[format!("user:{uid}")]).await;
    let (_, doc) = health(&c, &hub).await;
    assert_eq!(doc["checks"]["cache"]["provider"], "redis", "{doc}");

    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(
        &c,
        vec![Kind::cached(hub.url("/api/sessions/validate"), &token)],
        16,
        usize::MAX,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.stop();
    let killed = Instant::now();
    // While it is down: the health document says degraded, memory serves.
    let mut saw_degraded = false;
    // At least 1 s down, and longer (up to 10 s) until the health document has noticed, so a
    // slow machine does not turn into a failed test.
    while killed.elapsed() < Duration::from_secs(1)
        || (!saw_degraded && killed.elapsed() < Duration::from_secs(10))
    {
        let (_, doc) = health(&c, &hub).await;
        saw_degraded |= doc["checks"]["cache"]["provider"] == "in-memory";
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| redis.restart()).expect("Redis starts again on its port");
    let back = Instant::now();
    let mut recovered = Duration::ZERO;
    wait_for(
        "the cache uses Redis again",
        Duration::from_secs(30),
        async || {
            let (_, doc) = health(&c, &hub).await;
            let ok = doc["checks"]["cache"]["status"] == "healthy"
                && doc["checks"]["cache"]["provider"] == "redis";
            if ok {
                recovered = back.elapsed();
            }
            ok
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.await.expect("load finished");
    let (_, doc) = health(&c, &hub).await;

    let total = outcomes.len();
    let ok = outcomes
        .iter()
        .filter(|o| o.status.is_some_and(|s| s.is_success()))
        .count();
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.status.is_some_and(|s| s.is_success()))
        .collect();
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    let p99 = percentile(&mut latencies, 0.99);
    eprintln!(
        "chaos/redis-kill: {total} requests, {ok} 2xx, {} failed; p99 {p99:?}; \
         Redis down {:?}; degraded seen: {saw_degraded}; \
         cache back on Redis {recovered:?} after Redis was up again; \
         limiter after: {}",
        failed.len(),
        back - killed,
        doc["checks"]["ratelimit"]["mode"],
    );
    assert!(total > 100, "the load ran: {total} requests");
    assert!(
        failed.is_empty(),
        "no request fails while Redis is down: {} of {total} did, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(saw_degraded, "the health document showed the fallback");
    hub.stop().await;
}

/// Postgres unreachable (through a proxy that blackholes, then refuses) during load on the
/// cached route and on requests that need Postgres: every request is answered, cached ones 200,
/// the others 503 with `Retry-After` and the error envelope; no request hangs. After the proxy
/// passes again the service recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_during_load() {
    const CHECKOUT: Duration = Duration::from_millis(500);
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let proxy = FaultProxy::start_for_url(pg.url()).await.expect("proxy");
    let db_url = proxy.proxied_url(pg.url());
    let namespace = format!("{}hub:", redis.prefix());
    let hub = Hub::start(
        &db_url,
        &[
            ("REDIS_URL", redis.url()),
            ("CACHE_NAMESPACE", &namespace),
            ("DATABASE_CONNECT_TIMEOUT", "500ms"),
            ("DATABASE_CHECKOUT_TIMEOUT", "500ms"),
        ],
    )
    .await;
    let c = client();
    let db = connect(pg.url()).await;
    let (uid, email) = create_user(&db, "enterprise").await;
    let token = sign_in(&c, &hub, &email).await;
    exempt(
        &c,
        &hub,
        &[format!("user:{uid}"), "ip:127.0.0.1".to_owned()],
    )
    .await;

    let kinds = vec![
        // 0: cached session validation.
        Kind::cached(hub.url("/api/sessions/validate"), &token),
        // 1: a token no cache holds: its validation needs Postgres.
        Kind::uncached(hub.url("/api/sessions/validate")),
        // 2: a route that always needs Postgres.
        Kind::cached(hub.url("/api/contacts"), &token),
    ];
    let mut per_mode = Vec::new();
    for mode in [Mode::Blackhole, Mode::Refuse] {
        proxy.set_mode(mode);
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let load = spawn_load(&c, kinds.clone(), 12, usize::MAX, stop.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let outcomes = load.await.expect("load finished");
        per_mode.push((mode, outcomes, started.elapsed()));
    }
    proxy.set_mode(Mode::Pass);
    let healed = Instant::now();
    let mut recovered = Duration::ZERO;
    wait_for(
        "requests that need Postgres succeed again",
        Duration::from_secs(30),
        async || {
            let r = c
                .get(hub.url("/api/contacts"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("answered");
            let ok = r.status() == StatusCode::OK;
            if ok {
                recovered = healed.elapsed();
            }
            ok
        },
    )
    .await;
    let r = c
        .get(hub.url("/api/sessions/validate"))
        .bearer_auth(unite_hub::auth::new_token())
        .send()
        .await
        .expect("answered");
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "an unknown token is checked against Postgres again"
    );

    for (mode, outcomes, took) in &per_mode {
        let count = |kind: usize, f: &dyn Fn(&Outcome) -> bool| {
            outcomes.iter().filter(|o| o.kind == kind && f(o)).count()
        };
        let cached_ok = count(0, &|o| o.status == Some(StatusCode::OK));
        let cached_all = count(0, &|_| true);
        let is_503 = |o: &Outcome| {
            o.status == Some(StatusCode::SERVICE_UNAVAILABLE)
                && o.retry_after
                && o.error_code.as_deref() == Some("unavailable")
        };
        let uncached_503 = count(1, &is_503);
        let uncached_all = count(1, &|_| true);
        let contacts_503 = count(2, &is_503);
        let contacts_all = count(2, &|_| true);
        let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
        let p99 = percentile(&mut latencies, 0.99);
        let max = latencies.last().copied().unwrap_or_default();
        eprintln!(
            "chaos/postgres-{mode:?}: {} requests in {took:?}: cached validate {cached_ok}/{cached_all} 200; \
             uncached validate {uncached_503}/{uncached_all} 503+Retry-After+envelope; \
             contacts {contacts_503}/{contacts_all} 503+Retry-After+envelope; \
             p99 {p99:?}, max {max:?} (checkout timeout {CHECKOUT:?})",
            outcomes.len()
        );
        let odd: Vec<_> = outcomes
            .iter()
            .filter(|o| match o.kind {
                0 => o.status != Some(StatusCode::OK),
                _ => !is_503(o),
            })
            .collect();
        assert!(
            odd.is_empty(),
            "{mode:?}: {} of {} requests got something else, e.g. {:?}",
            odd.len(),
            outcomes.len(),
            &odd[..odd.len().min(5)]
        );
        assert!(cached_all > 0 && uncached_all > 0 && contacts_all > 0);
        // A bound on hanging only, not a latency target.
        assert!(max < CHECKOUT * 10, "{mode:?}: a request took {max:?}");
    }
    eprintln!(
        "chaos/postgres: Postgres-backed requests succeed again {recovered:?} after the proxy passes"
    );
    hub.stop().await;
}

/// Redis and Postgres both blackholed (connections accepted, nothing answered): every request
/// still completes; the p99 is printed beside the configured timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_blackholed_every_request_completes() {
    const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
    const CHECKOUT: Duration = Duration::from_millis(500);
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let pg_proxy = FaultProxy::start_for_url(pg.url()).await.expect("proxy");
    let redis_proxy = FaultProxy::start_for_url(redis.url()).await.expect("proxy");
    let namespace = format!("{}hub:", redis.prefix());
    let hub = Hub::start(
        &pg_proxy.proxied_url(pg.url()),
        &[
            ("REDIS_URL", &redis_proxy.proxied_url(redis.url())),
            ("CACHE_NAMESPACE", &namespace),
            ("REDIS_TIMEOUT", "200ms"),
            ("DATABASE_CONNECT_TIMEOUT", "500ms"),
            ("DATABASE_CHECKOUT_TIMEOUT", "500ms"),
        ],
    )
    .await;
    let c = client();
    let db = connect(pg.url()).await;
    let (uid, email) = create_user(&db, "enterprise").await;
    let token = sign_in(&c, &hub, &email).await;
    exempt(
        &c,
        &hub,
        &[format!("user:{uid}"), "ip:127.0.0.1".to_owned()],
    )
    .await;

    pg_proxy.set_mode(Mode::Blackhole);
    redis_proxy.set_mode(Mode::Blackhole);
    let kinds = vec![
        Kind::cached(hub.url("/api/sessions/validate"), &token),
        Kind::uncached(hub.url("/api/sessions/validate")),
        Kind::cached(hub.url("/api/contacts"), &token),
        Kind {
            url: hub.url("/api/health"),
            token: None,
            fresh_token: false,
        },
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let load = spawn_load(&c, kinds, 12, usize::MAX, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = load.await.expect("load finished");
    let took = started.elapsed();
    pg_proxy.set_mode(Mode::Pass);
    redis_proxy.set_mode(Mode::Pass);

    let transport_failures = outcomes.iter().filter(|o| o.status.is_none()).count();
    let server_errors = outcomes
        .iter()
        .filter(|o| {
            o.status
                .is_some_and(|s| s.is_server_error() && s != StatusCode::SERVICE_UNAVAILABLE)
        })
        .count();
    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    for o in &outcomes {
        let key = o
            .status
            .map_or_else(|| "no answer".to_owned(), |s| s.as_u16().to_string());
        *by_status.entry(key).or_default() += 1;
    }
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    let p50 = percentile(&mut latencies, 0.50);
    let p99 = percentile(&mut latencies, 0.99);
    let max = latencies.last().copied().unwrap_or_default();
    eprintln!(
        "chaos/blackhole: {} requests in {took:?}, by status {by_status:?}; p50 {p50:?}, p99 {p99:?}, \
         max {max:?}; REDIS_TIMEOUT {REDIS_TIMEOUT:?}, DATABASE_CHECKOUT_TIMEOUT {CHECKOUT:?}",
        outcomes.len()
    );
    assert!(!outcomes.is_empty());
    assert_eq!(transport_failures, 0, "every request was answered");
    assert_eq!(server_errors, 0, "no 500: {by_status:?}");
    // A bound on hanging only: 10 times the longest configured backend timeout.
    assert!(max < CHECKOUT * 10, "a request took {max:?}");
    hub.stop().await;
}
