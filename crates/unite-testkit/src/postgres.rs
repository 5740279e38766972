use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::{Error, redact_url};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A real Postgres for one test: its own schema, dropped when this value is dropped.
///
/// [`TestPostgres::url`] carries `options=-csearch_path=<schema>`, so every connection made
/// from it (by a pool under test, say) sees only this test's tables.
///
/// ```no_run
/// # async fn demo() {
/// let pg = unite_testkit::TestPostgres::new().await; // fails the test if Postgres is down
/// let client = pg.client().await;
/// client.batch_execute("CREATE TABLE t (id int)").await.unwrap(); // lands in pg.schema()
/// # }
/// ```
#[derive(Debug)]
pub struct TestPostgres {
    base_url: String,
    url: String,
    schema: String,
}

impl TestPostgres {
    /// Connects to `DATABASE_URL` (default: the local server) and creates a fresh schema.
    ///
    /// # Panics
    /// When Postgres does not answer: the message names the URL tried and how to start the
    /// local services. A test never passes because its server is missing.
    pub async fn new() -> Self {
        match Self::try_new().await {
            Ok(pg) => pg,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`TestPostgres::new`], returning the error instead of panicking.
    pub async fn try_new() -> Result<Self, Error> {
        Self::connect_to(&crate::database_url()).await
    }

    /// Connects to the given server and creates a fresh schema there.
    pub async fn connect_to(base_url: &str) -> Result<Self, Error> {
        let client = connect(base_url).await?;
        let schema = format!("unite_test_{}", crate::random_suffix());
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .map_err(|e| Error::Setup {
                service: "Postgres",
                reason: format!("CREATE SCHEMA {schema}: {e}"),
            })?;
        let sep = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{sep}options=-csearch_path%3D{schema}");
        Ok(Self {
            base_url: base_url.to_owned(),
            url,
            schema,
        })
    }

    /// A URL whose connections use this test's schema.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server URL without the schema option.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The name of this test's schema.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A new connection whose `search_path` is this test's schema.
    ///
    /// # Panics
    /// When the server stopped answering since [`TestPostgres::new`].
    pub async fn client(&self) -> Client {
        match connect(&self.url).await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let base_url = self.base_url.clone();
        let schema = self.schema.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: clean up from a
        // thread with a runtime of its own and wait for it.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = connect(&base_url).await {
                    let _ = client
                        .batch_execute(&format!(
                            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                        ))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Connects with a bounded wait and spawns the connection driver.
pub(crate) async fn connect(url: &str) -> Result<Client, Error> {
    let unreachable = |reason: String| Error::Unreachable {
        service: "Postgres",
        url: redact_url(url),
        env_var: "DATABASE_URL",
        reason,
    };
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| unreachable(format!("the URL does not parse: {e}")))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    let attempt = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls)).await;
    match attempt {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        Ok(Err(e)) => Err(unreachable(error_chain(&e))),
        Err(_) => Err(unreachable(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
