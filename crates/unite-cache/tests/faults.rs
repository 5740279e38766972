//! Redis failing mid-run behind a fault proxy: requests keep working, the breaker opens, the
//! status degrades, and L2 comes back by itself.

use std::time::Duration;

use fred::types::config::ReconnectPolicy;
use serde::{Deserialize, Serialize};
use unite_cache::{Cache, CircuitBreaker, CircuitState, Status};
use unite_testkit::{FaultProxy, Mode, TestRedis};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Contact {
    id: u64,
    name: String,
}

fn expected(id: u64) -> Contact {
    Contact {
        id,
        name: format!("contact {id}"),
    }
}

#[derive(Debug)]
struct Boom;
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("backend exploded")
    }
}
impl std::error::Error for Boom {}

async fn load(cache: &Cache, key: &str, id: u64) -> Contact {
    cache
        .get_or_load(
            key,
            move || async move { Ok::<_, Boom>(Some(expected(id))) },
        )
        .await
        .expect("get_or_load never fails because of Redis")
        .expect("the loader always finds it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_faults_degrade_then_recover_without_failing_requests() {
    let redis = TestRedis::new().await;
    let proxy = FaultProxy::start_for_url(redis.url()).await.unwrap();
    let breaker = CircuitBreaker::builder()
        .name("cache-redis-test")
        .window(unite_breaker::Window::Count(8))
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .open_duration(Duration::from_millis(200))
        .max_open_duration(Duration::from_millis(500))
        .half_open_calls(2)
        .build()
        .unwrap();
    let cache = Cache::builder()
        .redis_url(proxy.proxied_url(redis.url()))
        .namespace(redis.prefix())
        .command_timeout(Duration::from_millis(100))
        .reconnect_policy(ReconnectPolicy::new_constant(0, 50))
        .breaker(breaker)
        .build()
        .await
        .unwrap();
    // A second instance straight on Redis seeds a value only L2 has.
    let direct = Cache::builder()
        .redis_url(redis.url())
        .namespace(redis.prefix())
        .build()
        .await
        .unwrap();
    direct
        .set("seeded", &expected(1000), Duration::from_secs(120))
        .await
        .unwrap();

    assert_eq!(load(&cache, "warm", 1).await, expected(1));
    assert_eq!(cache.status(), Status::Healthy);

    // Blackhole: Redis accepts bytes and never answers.
    proxy.set_mode(Mode::Blackhole);
    let mut opened = false;
    for i in 0..60 {
        assert_eq!(load(&cache, &format!("bh{i}"), i).await, expected(i));
        assert_eq!(load(&cache, "warm", 1).await, expected(1));
        if cache.breaker().unwrap().state() == CircuitState::Open {
            opened = true;
            break;
        }
    }
    assert!(opened, "the breaker opened during the blackhole");
    assert_eq!(cache.status(), Status::Degraded);
    let stats = cache.stats();
    assert_eq!(stats.status, Status::Degraded);
    assert_eq!(stats.circuit_state, Some(CircuitState::Open));
    // Writes skip L2 while it is down, and still succeed.
    cache
        .set("written-while-down", &expected(5), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        cache.get::<Contact>("written-while-down").await.unwrap(),
        Some(expected(5))
    );

    // Reset: every connection is torn down as soon as it is made.
    proxy.set_mode(Mode::Reset);
    for i in 100..130 {
        assert_eq!(load(&cache, &format!("rs{i}"), i).await, expected(i));
        cache
            .set(&format!("rs{i}"), &expected(i), Duration::from_secs(60))
            .await
            .unwrap();
    }
    assert_eq!(cache.status(), Status::Degraded);
    assert!(
        cache.stats().l2.unwrap().skipped > 0,
        "calls were refused by the open breaker"
    );

    // Redis is back: the breaker's trial calls close it and L2 serves again.
    proxy.set_mode(Mode::Pass);
    let hits_before = cache.stats().l2.unwrap().hits;
    let mut recovered = false;
    for _ in 0..300 {
        let seeded: Option<Contact> = cache.get("seeded").await.unwrap();
        if seeded == Some(expected(1000)) && cache.status() == Status::Healthy {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "L2 came back: {:?}", cache.stats());
    assert!(cache.stats().l2.unwrap().hits > hits_before);
    assert_eq!(cache.breaker().unwrap().state(), CircuitState::Closed);
    // And writes reach Redis again.
    cache
        .set("after", &expected(7), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        direct.get::<Contact>("after").await.unwrap(),
        Some(expected(7))
    );
}
