//! Schema migrations: SQL files compiled into the binary, applied in order at start-up, each in
//! its own transaction, under an advisory lock so instances starting together do not race.

use tokio_postgres::Client;

/// The migrations, in order: (version, name, SQL).
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "init", include_str!("../migrations/0001_init.sql"))];

/// Any number chosen for this service's migration lock.
const LOCK_KEY: i64 = 0x756e_6974_6568_7562; // "unitehub"

/// Applies the migrations not applied yet; returns how many it applied.
pub async fn run(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply(client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await?;
    result
}

async fn apply(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    let mut applied = 0;
    for (version, name, sql) in MIGRATIONS {
        let done = client
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "migration applied");
        applied += 1;
    }
    Ok(applied)
}
