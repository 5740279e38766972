use unite_pool::unite_breaker::State;
use unite_testkit::TestPostgres;

use crate::support::builder;

#[tokio::test]
async fn the_snapshot_serializes_with_the_health_names_and_counts_what_happened() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url()).max_size(3).build().await.unwrap();

    for i in 0..5i32 {
        let row = pool.query_one("SELECT $1::int4", &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i);
    }
    pool.query("SELECT * FROM no_such_table", &[])
        .await
        .unwrap_err();
    let held = pool.get().await.unwrap();

    let stats = pool.stats();
    let json = serde_json::to_value(&stats).unwrap();
    for key in [
        "total_requests",
        "successes",
        "failures",
        "success_rate",
        "average_response_time_ms",
        "p50_response_time_ms",
        "p95_response_time_ms",
        "p99_response_time_ms",
        "circuit_state",
        "size",
        "idle",
        "in_use",
        "waiters",
        "checkout_timeouts",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(json["total_requests"], 7);
    assert_eq!(json["successes"], 6);
    assert_eq!(json["caller_errors"], 1);
    assert_eq!(json["failures"], 0);
    assert_eq!(json["rejected"], 0);
    assert_eq!(json["circuit_state"], "closed");
    assert_eq!(json["in_use"], 1);
    assert_eq!(json["waiters"], 0);
    assert_eq!(json["checkout_timeouts"], 0);
    assert!((stats.success_rate - 6.0 / 7.0).abs() < 1e-9);
    assert!(stats.size >= 1 && stats.size <= 3, "{stats:?}");
    assert_eq!(stats.idle, stats.size - 1);
    assert!(stats.average_response_time_ms > 0.0);
    assert!(stats.p50_response_time_ms > 0.0);
    assert!(stats.p50_response_time_ms <= stats.p95_response_time_ms);
    assert!(stats.p95_response_time_ms <= stats.p99_response_time_ms);
    drop(held);

    pool.breaker().force_open();
    pool.query("SELECT 1", &[]).await.unwrap_err();
    let stats = pool.stats();
    assert_eq!(stats.circuit_state, State::Open);
    assert_eq!(stats.rejected, 1);
    assert_eq!(stats.total_requests, 8);
    assert_eq!(
        serde_json::to_value(&stats).unwrap()["circuit_state"],
        "open"
    );
}
