//! PgBouncer transaction mode, checked against Postgres directly: no session state at
//! connect, `SET LOCAL` per transaction, unnamed statements outside transactions.

use std::time::Duration;

use unite_pool::Error;
use unite_pool::tokio_postgres::SimpleQueryMessage;
use unite_pool::tokio_postgres::types::Type;
use unite_testkit::{PostgresOptions, PostgresServer, TestPostgres};

use crate::support::builder;

fn first_value(messages: &[SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn statement_timeout_is_set_per_transaction_not_per_session() {
    let pg = TestPostgres::new().await;
    let pool = builder(pg.url())
        .max_size(1)
        .pgbouncer(true)
        .statement_timeout(Duration::from_millis(200))
        .query_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();

    // The session itself carries no statement timeout (nothing was SET at connect)...
    {
        let conn = pool.get().await.unwrap();
        let shown = conn.simple_query("SHOW statement_timeout").await.unwrap();
        assert_eq!(first_value(&shown), "0");
    }
    // ...but every pool call runs under it, inside its own transaction.
    let row = pool.query_one("SHOW statement_timeout", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "200ms");
    let err = pool.execute("SELECT pg_sleep(3)", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err:?}");
    let err = pool
        .transaction(async |tx| {
            tx.batch_execute("SELECT pg_sleep(3)").await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err:?}");
    // SET LOCAL ended with each transaction.
    let conn = pool.get().await.unwrap();
    let shown = conn.simple_query("SHOW statement_timeout").await.unwrap();
    assert_eq!(first_value(&shown), "0");
}

/// The lines of the server log that mention `marker`.
fn logged(server: &PostgresServer, from: usize) -> Vec<String> {
    let log = server
        .data_dir()
        .parent()
        .map(|dir| dir.join("postgres.log"))
        .expect("the log sits beside the data directory");
    let text = std::fs::read_to_string(&log).expect("the server log is readable");
    text.lines()
        .skip(from)
        .filter(|l| l.contains("LOG:  statement: ") || l.contains("LOG:  execute "))
        .map(|l| l[l.find("LOG:  ").map_or(0, |i| i + 6)..].to_owned())
        .collect()
}

fn log_len(server: &PostgresServer) -> usize {
    let log = server.data_dir().parent().map(|d| d.join("postgres.log"));
    log.and_then(|p| std::fs::read_to_string(p).ok())
        .map_or(0, |t| t.lines().count())
}

/// What the server saw, read from its own log (`log_statement = all`): unnamed statements
/// outside transactions, named ones only inside `BEGIN … COMMIT`, no `SET` at connect.
#[tokio::test]
async fn the_server_sees_no_named_statement_outside_a_transaction() {
    let server =
        PostgresServer::start_with(PostgresOptions::default().setting("log_statement", "all"))
            .unwrap();
    let pool = builder(&server.url())
        .max_size(1)
        .pgbouncer(true)
        .build()
        .await
        .unwrap();
    pool.health().await.unwrap();

    let from = log_len(&server);
    pool.query("SELECT 1 AS marker_plain", &[]).await.unwrap();
    pool.query("SELECT $1::int4 AS marker_param", &[&1i32])
        .await
        .unwrap();
    pool.query_typed("SELECT $1::int4 AS marker_typed", &[(&1i32, Type::INT4)])
        .await
        .unwrap();
    pool.transaction(async |tx| {
        tx.query("SELECT $1::int4 AS marker_tx", &[&1i32]).await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let lines = logged(&server, from);
    let executes: Vec<&String> = lines.iter().filter(|l| l.starts_with("execute ")).collect();
    assert!(
        executes
            .iter()
            .any(|l| l.starts_with("execute <unnamed>: SELECT 1 AS marker_plain")),
        "{lines:#?}"
    );
    assert!(
        executes
            .iter()
            .any(|l| l.starts_with("execute <unnamed>: SELECT $1::int4 AS marker_typed")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("SET ")),
        "no session state: {lines:#?}"
    );
    // A named statement appears only between START TRANSACTION and COMMIT.
    let mut in_tx = false;
    let mut named = 0;
    for line in &lines {
        match line.as_str() {
            "statement: BEGIN" | "statement: START TRANSACTION" => in_tx = true,
            "statement: COMMIT" | "statement: ROLLBACK" => in_tx = false,
            l if l.starts_with("execute ") && !l.starts_with("execute <unnamed>") => {
                assert!(
                    in_tx,
                    "named statement outside a transaction: {l}\n{lines:#?}"
                );
                named += 1;
            }
            _ => {}
        }
    }
    assert_eq!(
        named, 2,
        "marker_param and marker_tx were prepared: {lines:#?}"
    );

    // Without PgBouncer mode, the same parameterized call is a named statement on its own:
    // the log tells the two modes apart.
    let direct = builder(&server.url()).max_size(1).build().await.unwrap();
    let from = log_len(&server);
    direct
        .query("SELECT $1::int4 AS marker_direct", &[&1i32])
        .await
        .unwrap();
    let lines = logged(&server, from);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("execute s") && l.contains("marker_direct")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l == "statement: START TRANSACTION"),
        "{lines:#?}"
    );
}
