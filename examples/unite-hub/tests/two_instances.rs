//! Two service instances on two loopback ports sharing the real local Redis and Postgres, as
//! two instances behind a load balancer would: one rate-limit budget between them, and a
//! write on one visible on the other.
//!
//! The staleness figures are printed (run with `--nocapture` to see them), never asserted:
//! the only bound checked is that every write becomes visible at all within 5 s.

#![allow(
    clippy::print_stdout,
    reason = "the measured figures are this test's report"
)]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Hub, client, create_user, get_json, sign_in};
use unite_testkit::{TestPostgres, TestRedis};

/// Bound on each test.
const TEST_LIMIT: Duration = Duration::from_secs(180);
/// How long a write may take to show on the other instance before the test fails: a
/// correctness bound (the write is seen at all), not a speed goal.
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);
/// How many writes the staleness test makes.
const WRITES: usize = 200;

/// Two instances on one Redis namespace and one Postgres schema.
async fn pair(pg: &TestPostgres, redis: &TestRedis) -> (Hub, Hub) {
    let ns = format!("{}hub:", redis.prefix());
    let vars = [("REDIS_URL", redis.url()), ("CACHE_NAMESPACE", ns.as_str())];
    let a = Hub::start(pg.url(), &vars).await;
    let b = Hub::start(pg.url(), &vars).await;
    (a, b)
}

/// Sends `rounds` requests alternating between the instances; answers how many were
/// allowed (not 429), the statuses of the last request on each instance, and how long the
/// run took.
async fn alternate(
    rounds: usize,
    hubs: [&Hub; 2],
    send: impl Fn(&Hub) -> reqwest::RequestBuilder,
) -> (usize, [StatusCode; 2], Duration) {
    let started = Instant::now();
    let mut allowed = 0;
    let mut last = [StatusCode::OK; 2];
    for i in 0..rounds {
        let which = i % 2;
        let status = send(hubs[which]).send().await.expect("answered").status();
        if status != StatusCode::TOO_MANY_REQUESTS {
            allowed += 1;
        }
        last[which] = status;
    }
    (allowed, last, started.elapsed())
}

/// The quota a run may have seen: the whole burst, plus what the limiter replenished while
/// the run lasted (nothing when it took less than one emission interval, as it does here).
fn expected_allowed(
    quota: usize,
    per: Duration,
    elapsed: Duration,
) -> std::ops::RangeInclusive<usize> {
    let interval = per / u32::try_from(quota).unwrap_or(1);
    let replenished = (elapsed.as_nanos() / interval.as_nanos().max(1)) as usize;
    quota..=quota + replenished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_quota_is_shared_by_both_instances() {
    tokio::time::timeout(TEST_LIMIT, async {
        let pg = TestPostgres::new().await;
        let redis = TestRedis::new().await;
        let (a, b) = pair(&pg, &redis).await;
        let c = client();

        // Anonymous requests from one IP: the public tier, 20 a minute, whichever instance.
        let (allowed, last, elapsed) =
            alternate(40, [&a, &b], |hub| c.get(hub.url("/api/contacts"))).await;
        println!(
            "public quota (20/min by IP) over two instances: {allowed} of 40 allowed in {elapsed:?}"
        );
        let range = expected_allowed(20, Duration::from_secs(60), elapsed);
        assert!(
            range.contains(&allowed),
            "{allowed} allowed, expected {range:?}"
        );
        assert_eq!(
            last,
            [StatusCode::TOO_MANY_REQUESTS; 2],
            "both instances refuse"
        );

        // One user in the `ai` class: 10 a minute, whichever instance. (A fresh namespace, so
        // the sign-in is not refused by the IP quota spent above.)
        let redis2 = TestRedis::new().await;
        let (a2, b2) = pair(&pg, &redis2).await;
        let db = pg.client().await;
        let (_, email) = create_user(&db, "free").await;
        let token = sign_in(&c, &a2, &email).await;
        let (allowed, last, elapsed) = alternate(24, [&a2, &b2], |hub| {
            c.get(hub.url("/api/reports/contacts")).bearer_auth(&token)
        })
        .await;
        println!(
            "ai quota (10/min by user) over two instances: {allowed} of 24 allowed in {elapsed:?}"
        );
        let range = expected_allowed(10, Duration::from_secs(60), elapsed);
        assert!(
            range.contains(&allowed),
            "{allowed} allowed, expected {range:?}"
        );
        assert_eq!(
            last,
            [StatusCode::TOO_MANY_REQUESTS; 2],
            "both instances refuse"
        );

        for hub in [a, b, a2, b2] {
            hub.stop().await;
        }
    })
    .await
    .expect("test finished within its time limit");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_shows_on_the_other_staleness_measured() {
    tokio::time::timeout(TEST_LIMIT, async {
        let pg = TestPostgres::new().await;
        let redis = TestRedis::new().await;
        let (a, b) = pair(&pg, &redis).await;
        let c = client();
        let db = pg.client().await;
        // Enterprise: 10,000 requests a minute, far above what this test sends.
        let (_, email) = create_user(&db, "enterprise").await;
        let token = sign_in(&c, &a, &email).await;
        let r = c
            .post(a.url("/api/contacts"))
            .bearer_auth(&token)
            .json(&json!({ "name": "v0" }))
            .send()
            .await
            .expect("create answered");
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.json::<Value>().await.expect("JSON")["id"]
            .as_i64()
            .expect("id");
        let path = format!("/api/contacts/{id}");
        let read_b = async || {
            let (status, v) = get_json(&c, &b.url(&path), &token).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            v["name"].as_str().unwrap_or_default().to_owned()
        };
        // B holds v0 in its memory before the first write.
        assert_eq!(read_b().await, "v0");

        let mut staleness = Vec::with_capacity(WRITES);
        let mut stale_reads = 0usize;
        for i in 1..=WRITES {
            let name = format!("v{i}");
            let r = c
                .put(a.url(&path))
                .bearer_auth(&token)
                .json(&json!({ "name": name }))
                .send()
                .await
                .expect("update answered");
            assert_eq!(r.status(), StatusCode::OK);
            let written = Instant::now();
            loop {
                let seen = read_b().await;
                if seen == name {
                    staleness.push(written.elapsed());
                    break;
                }
                stale_reads += 1;
                assert!(
                    written.elapsed() < VISIBLE_WITHIN,
                    "write {i} not visible on the other instance within {VISIBLE_WITHIN:?} (still {seen})"
                );
                tokio::task::yield_now().await;
            }
        }
        staleness.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "staleness over {WRITES} writes (A's write answered -> first fresh read on B): \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; stale reads seen: {stale_reads}",
            ms(percentile(&staleness, 50.0)),
            ms(percentile(&staleness, 99.0)),
            ms(percentile(&staleness, 100.0)),
        );
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("test finished within its time limit");
}
