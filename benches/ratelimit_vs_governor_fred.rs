//! Local decision vs raw governor `check_key`; shared decision vs a raw fred `EVALSHA` of a
//! trivial script. Each pair runs side by side in one run.

use std::cell::Cell;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;
use common::paired::{Timed, Totals, paired};

use criterion::{Criterion, criterion_group, criterion_main};
use fred::prelude::*;
use futures::FutureExt;
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, RateLimiter as Governor};
use unite_ratelimit::{
    EndpointClass, PenaltyConfig, Quota, RateLimiter, Subject, Tier, TierQuotas,
};

const KEYS: u32 = 1024;

/// governor's keyed limiter over its DashMap store with foldhash instead of SipHash.
type FoldhashGovernor = governor::RateLimiter<
    (EndpointClass, Subject),
    governor::state::keyed::DashMapStateStore<
        (EndpointClass, Subject),
        foldhash::fast::RandomState,
    >,
    governor::clock::QuantaClock,
    StateInformationMiddleware,
>;

fn subjects() -> Vec<Subject> {
    (0..KEYS)
        .map(|i| Subject::Ip(IpAddr::V4(Ipv4Addr::from(0xC000_0200 + i))))
        .collect()
}

/// A quota no benchmark exhausts, so every decision is an allowed one.
fn roomy() -> Quota {
    let n = NonZeroU32::new(1_000_000).unwrap();
    Quota::per_second(n)
}

fn local(c: &mut Criterion) {
    let quota = roomy();
    let subjects = subjects();
    let mut group = c.benchmark_group("local");

    let raw: DefaultKeyedRateLimiter<(EndpointClass, Subject), StateInformationMiddleware> =
        Governor::keyed(governor::Quota::per_second(quota.limit()))
            .with_middleware::<StateInformationMiddleware>();
    let keys: Vec<(EndpointClass, Subject)> = subjects
        .iter()
        .map(|s| (EndpointClass::Default, s.clone()))
        .collect();
    let mut i = 0usize;
    group.bench_function("governor_check_key", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(raw.check_key(&keys[i]).is_ok())
        });
    });

    // For reference: governor with the hasher unite-ratelimit's store uses (foldhash), to tell
    // the hasher's share of the difference from the rest.
    let raw_fast: FoldhashGovernor = Governor::dashmap_with_clock_and_hasher(
        governor::Quota::per_second(quota.limit()),
        governor::clock::QuantaClock::default(),
        foldhash::fast::RandomState::default(),
    )
    .with_middleware::<StateInformationMiddleware>();
    let mut i = 0usize;
    group.bench_function("governor_check_key_foldhash", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(raw_fast.check_key(&keys[i]).is_ok())
        });
    });

    let limiter = RateLimiter::builder()
        .tier(Tier::Public, TierQuotas::new(quota, quota))
        .penalty(PenaltyConfig::default())
        .build()
        .unwrap();
    let mut i = 0usize;
    group.bench_function("unite_check_now", |b| {
        b.iter(|| {
            i = (i + 1) % subjects.len();
            let d = limiter.check_now(&subjects[i], Tier::Public, EndpointClass::Default);
            black_box(d.is_some_and(|d| d.allowed))
        });
    });
    // The same decision through the future `check` returns (what the tower layer awaits).
    let mut i = 0usize;
    group.bench_function("unite_check_future", |b| {
        b.iter(|| {
            i = (i + 1) % subjects.len();
            let d = limiter
                .check(&subjects[i], Tier::Public, EndpointClass::Default)
                .now_or_never();
            black_box(d.is_some_and(|d| d.allowed))
        });
    });
    group.finish();
}

fn shared(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Fails with the URL tried and how to start Redis, like every other bench that needs a
    // server: a shared group that skipped itself would let a run without Redis pass unseen.
    let redis = rt.block_on(unite_testkit::TestRedis::new());
    let client = redis.client();
    let sha: String = rt
        .block_on(client.script_load::<String, _>("return 1"))
        .unwrap();
    let quota = roomy();
    let subjects = subjects();
    let mut group = c.benchmark_group("shared");
    group.measurement_time(Duration::from_secs(3));

    let raw = || async {
        let v: i64 = client
            .evalsha(sha.as_str(), Vec::<String>::new(), Vec::<String>::new())
            .await
            .unwrap();
        v
    };
    group.bench_function("fred_evalsha_return_1", |b| b.to_async(&rt).iter(&raw));

    // The decision script itself through raw fred (same keys and arguments as a decision), to
    // tell the script's own cost in Redis from the limiter's overhead around it.
    let gcra_sha = fred::util::sha1_hash(unite_ratelimit::GCRA_SCRIPT);
    let _: String = rt
        .block_on(client.script_load::<String, _>(unite_ratelimit::GCRA_SCRIPT))
        .unwrap();
    let raw_keys: Vec<String> = {
        let gcra = unite_ratelimit::RedisGcra::new(
            client.clone(),
            format!("{}raw:", redis.prefix()),
            Duration::from_secs(1),
        );
        subjects
            .iter()
            .map(|s| gcra.key(s, EndpointClass::Default))
            .collect()
    };
    // The roomy quota (T = 1 µs, burst 1,000,000), the time as the limiter sends it (this
    // machine's clock stands in for its reading of the server's), one decision wanted, and
    // penalties as the limiter's defaults.
    let settings = "1000000 600000000 60000000 0 1";
    let mut i = 0usize;
    group.bench_function("fred_evalsha_gcra_script", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % raw_keys.len();
            let keys = raw_keys[i].as_str();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros();
            let args: Vec<Value> = vec![
                Value::Integer(1),
                Value::Integer(999_999),
                Value::Integer(i64::try_from(now).unwrap()),
                Value::Integer(1),
                Value::from(settings),
            ];
            let client = &client;
            let sha = gcra_sha.as_str();
            async move {
                let v: Value = client.evalsha(sha, keys, args).await.unwrap();
                black_box(v)
            }
        });
    });

    let limiter = rt.block_on(async {
        RateLimiter::builder()
            .redis(redis.client())
            .key_prefix(redis.prefix())
            .tier(Tier::Public, TierQuotas::new(quota, quota))
            .command_timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    });
    let i = Cell::new(0usize);
    let unite = || {
        i.set((i.get() + 1) % subjects.len());
        let subject = &subjects[i.get()];
        let limiter = &limiter;
        async move {
            let d = limiter
                .check(subject, Tier::Public, EndpointClass::Default)
                .await;
            assert_eq!(d.source, unite_ratelimit::DecisionSource::Shared);
            d.allowed
        }
    };
    group.bench_function("unite_shared_check", |b| b.to_async(&rt).iter(&unite));

    // The same pair again, interleaved call by call: the load of a shared machine drifts
    // between criterion's benchmarks, and the ratio of medians here is the figure to compare
    // with the goal.
    let totals = Totals::default();
    group.bench_function("paired/fred_evalsha_return_1", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| paired(iters, Timed::Raw, raw, unite, &totals));
    });
    group.bench_function("paired/unite_shared_check", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| paired(iters, Timed::Unite, raw, unite, &totals));
    });

    // One busy key with reservations on (up to 64 decisions a round trip, spent within
    // 100 ms): what `reserve` saves a service whose users send many requests each.
    let reserving = rt.block_on(async {
        RateLimiter::builder()
            .redis(redis.client())
            .key_prefix(format!("{}reserving:", redis.prefix()))
            .tier(Tier::Public, TierQuotas::new(quota, quota))
            .reserve(NonZeroU32::new(64).unwrap(), Duration::from_millis(100))
            .command_timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    });
    let busy = subjects[0].clone();
    group.bench_function("unite_shared_check_reserving_one_busy_key", |b| {
        b.to_async(&rt).iter(|| async {
            let d = reserving
                .check(&busy, Tier::Public, EndpointClass::Default)
                .await;
            black_box(d.allowed)
        });
    });
    group.finish();
    totals.report("shared/unite_shared_check vs shared/fred_evalsha_return_1");
    drop(reserving);
    drop(limiter);
    drop(rt);
    drop(redis);
}

criterion_group!(benches, local, shared);
criterion_main!(benches);
