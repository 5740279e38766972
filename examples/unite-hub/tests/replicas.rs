//! The service with a read replica: a primary and a streaming replica that `unite-testkit`
//! starts from the OS binaries (`initdb`, `pg_basebackup -R`), plus the local Redis.
//!
//! No assertion is about timing: state changes are polled for with a bounded deadline, and
//! the test as a whole is bounded.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Hub, client, connect, create_user, get_json, health, sign_in, wait_for};
use unite_testkit::{PostgresServer, TestRedis};

/// Bound on the whole test.
const TEST_LIMIT: Duration = Duration::from_secs(180);
/// Bound on waiting for one state change.
const DEADLINE: Duration = Duration::from_secs(30);

/// The names of the contacts a listing shows.
fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn replica_entry(doc: &Value) -> &Value {
    &doc["checks"]["database"]["replicas"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_use_the_replica_read_your_writes_holds_and_a_stopped_replica_degrades() {
    tokio::time::timeout(TEST_LIMIT, scenario())
        .await
        .expect("test finished within its time limit");
}

async fn scenario() {
    let (primary, mut replica) = tokio::task::spawn_blocking(|| {
        let primary = PostgresServer::start_primary().unwrap_or_else(|e| {
            panic!("this test needs a local primary Postgres and could not start one: {e}")
        });
        let replica = primary.start_replica().unwrap_or_else(|e| {
            panic!("this test needs a streaming replica and could not start one: {e}")
        });
        (primary, replica)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let redis = TestRedis::new().await;
    let ns = format!("{}hub:", redis.prefix());
    let (primary_url, replica_url) = (primary.url(), replica.url());
    // A lag limit far above anything here: a replica with replay paused stays in rotation,
    // so only the read-your-writes positions keep the service's reads correct.
    let shared = [
        ("DATABASE_REPLICA_URLS", replica_url.as_str()),
        ("DATABASE_REPLICA_MAX_LAG", "1h"),
        ("REDIS_URL", redis.url()),
        ("CACHE_NAMESPACE", ns.as_str()),
    ];
    let a = Hub::start(&primary_url, &shared).await;
    let b = Hub::start(&primary_url, &shared).await;
    // A third instance without Redis: its cache never hears of sessions made on the others.
    let lone = Hub::start(
        &primary_url,
        &[
            ("DATABASE_REPLICA_URLS", replica_url.as_str()),
            ("DATABASE_REPLICA_MAX_LAG", "1h"),
        ],
    )
    .await;
    let c = client();
    let db = connect(&primary_url).await;

    // Health lists the replica, in rotation.
    let mut doc = Value::Null;
    wait_for(
        "the replica to be healthy in /api/health",
        DEADLINE,
        async || {
            doc = health(&c, &b).await.1;
            replica_entry(&doc)["healthy"] == true
        },
    )
    .await;
    assert_eq!(doc["status"], "healthy", "{doc}");
    assert_eq!(doc["checks"]["database"]["status"], "healthy", "{doc}");
    let entry = replica_entry(&doc);
    assert!(entry["lag_ms"].is_number(), "{doc}");
    assert_eq!(entry["circuit_state"], "closed", "{doc}");
    assert!(
        entry.get("url").is_none(),
        "no database host in the public document: {doc}"
    );
    assert!(
        doc["checks"]["database"]["pool"].get("replicas").is_none(),
        "replicas are listed once: {doc}"
    );

    let (uid, email) = create_user(&db, "enterprise").await;
    let token = sign_in(&c, &a, &email).await;
    // Wait until the replica has the user's row, then stop its replay: from here on, every
    // write is on the primary only.
    let replica_db = connect(&replica_url).await;
    wait_for("the replica to replay the sign-in", DEADLINE, async || {
        replica_db
            .query_opt("SELECT 1 FROM users WHERE id = $1", &[&uid])
            .await
            .is_ok_and(|r| r.is_some())
    })
    .await;
    replica_db
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause replay");

    // Reads go to the replica: a contact written straight to the primary is not listed yet.
    db.execute(
        "INSERT INTO contacts (owner_id, name) VALUES ($1, 'outside')",
        &[&uid],
    )
    .await
    .expect("insert");
    let (status, list) = get_json(&c, &b.url("/api/contacts"), &token).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(
        names(&list).is_empty(),
        "the list came from the paused replica: {list}"
    );
    let replica_reads = |doc: &Value| replica_entry(doc)["total_requests"].as_u64().unwrap_or(0);
    assert!(replica_reads(&health(&c, &b).await.1) >= 1);

    // Read-your-writes: a contact made through A is listed by B (and read, and counted in
    // the report) at once, although the replica has not replayed it.
    let r = c
        .post(a.url("/api/contacts"))
        .bearer_auth(&token)
        .json(&json!({ "name": "mine", "company": "Analytical" }))
        .send()
        .await
        .expect("create answered");
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.expect("JSON")["id"]
        .as_i64()
        .expect("id");
    for hub in [&a, &b] {
        let (status, list) = get_json(&c, &hub.url("/api/contacts"), &token).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert!(names(&list).contains(&"mine".to_owned()), "{list}");
        let (status, report) = get_json(&c, &hub.url("/api/reports/contacts"), &token).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["contacts"], 2, "{report}");
    }
    // On a cache miss too (the key dropped everywhere), the contact is read where it exists.
    let r = c
        .post(a.url("/api/admin/cache/invalidate"))
        .bearer_auth(support::ADMIN)
        .json(&json!({ "keys": [unite_hub::routes::contacts::contact_key(uid, id)] }))
        .send()
        .await
        .expect("invalidate answered");
    assert!(r.status().is_success(), "{}", r.status());
    let (status, one) = get_json(&c, &b.url(&format!("/api/contacts/{id}")), &token).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["name"], "mine");

    // A session signed in on A validates on the instance without Redis, whose cache does
    // not have it and whose replica has not replayed it.
    let fresh = sign_in(&c, &a, &email).await;
    let (status, valid) = get_json(&c, &lone.url("/api/sessions/validate"), &fresh).await;
    assert_eq!(status, StatusCode::OK, "{valid}");
    assert_eq!(valid["user_id"], uid);

    // Replay resumes: the replica catches up and serves this user's reads again.
    replica_db
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume replay");
    let before = replica_reads(&health(&c, &b).await.1);
    wait_for("reads to return to the replica", DEADLINE, async || {
        let (status, list) = get_json(&c, &b.url("/api/contacts"), &token).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(names(&list).len(), 2, "{list}");
        replica_reads(&health(&c, &b).await.1) > before
    })
    .await;
    drop(replica_db);

    // The replica stops: the service keeps answering; health says degraded, not unhealthy.
    let replica = tokio::task::spawn_blocking(move || {
        replica.stop();
        replica
    })
    .await
    .expect("replica stopped");
    // (The report is in the `ai` class, 10 a minute: asked once.)
    let mut paths = vec!["/api/reports/contacts"];
    for _ in 0..10 {
        paths.extend(["/api/contacts", "/api/sessions/validate"]);
    }
    for path in paths {
        let (status, body) = get_json(&c, &b.url(path), &token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let mut code = StatusCode::OK;
    wait_for(
        "health to report the replica out of rotation",
        DEADLINE,
        async || {
            (code, doc) = health(&c, &b).await;
            replica_entry(&doc)["healthy"] == false
        },
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{doc}");
    assert_eq!(doc["status"], "degraded", "{doc}");
    assert_eq!(doc["checks"]["database"]["status"], "degraded", "{doc}");
    assert!(replica_entry(&doc)["last_error"].is_string(), "{doc}");
    let (status, list) = get_json(&c, &b.url("/api/contacts"), &token).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(names(&list).len(), 2, "{list}");

    a.stop().await;
    b.stop().await;
    lone.stop().await;
    drop((replica, primary));
}
