use std::time::Duration;

use fred::prelude::*;

use crate::{Error, redact_url};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A real Redis for one test: a key prefix of its own, whose keys are deleted on drop.
///
/// ```no_run
/// # async fn demo() {
/// use fred::prelude::*;
/// let redis = unite_testkit::TestRedis::new().await; // fails the test if Redis is down
/// let key = redis.key("greeting");                   // "unite-test:<random>:greeting"
/// let _: () = redis.client().set(&key, "hi", None, None, false).await.unwrap();
/// # }
/// ```
#[derive(Debug)]
pub struct TestRedis {
    url: String,
    prefix: String,
    client: Client,
}

impl TestRedis {
    /// Connects to `REDIS_URL` (default: the local server) with a fresh key prefix.
    ///
    /// # Panics
    /// When Redis does not answer: the message names the URL tried and how to start the
    /// local services. A test never passes because its server is missing.
    pub async fn new() -> Self {
        match Self::try_new().await {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`TestRedis::new`], returning the error instead of panicking.
    pub async fn try_new() -> Result<Self, Error> {
        Self::connect_to(&crate::redis_url()).await
    }

    /// Connects to the given server with a fresh key prefix.
    pub async fn connect_to(url: &str) -> Result<Self, Error> {
        let client = connect(url).await?;
        Ok(Self {
            url: url.to_owned(),
            prefix: format!("unite-test:{}:", crate::random_suffix()),
            client,
        })
    }

    /// The server URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This test's key prefix (ends with `:`). Every key under it is deleted on drop.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `name` under this test's prefix.
    #[must_use]
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The connected client (clones share one connection).
    #[must_use]
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A new, separately connected client to the same server.
    ///
    /// # Panics
    /// When the server stopped answering.
    pub async fn new_client(&self) -> Client {
        match connect(&self.url).await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{}*", self.prefix);
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = connect(&url).await {
                    let _: Result<i64, _> = client
                        .eval(
                            "local n = 0 \
                             for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
                               n = n + redis.call('DEL', k) end \
                             return n",
                            Vec::<String>::new(),
                            vec![pattern],
                        )
                        .await;
                    let _ = client.quit().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Connects with a bounded wait, no reconnection, and checks with PING.
pub(crate) async fn connect(url: &str) -> Result<Client, Error> {
    let unreachable = |reason: String| Error::Unreachable {
        service: "Redis",
        url: redact_url(url),
        env_var: "REDIS_URL",
        reason,
    };
    let config =
        Config::from_url(url).map_err(|e| unreachable(format!("the URL does not parse: {e}")))?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_TIMEOUT;
            c.internal_command_timeout = CONNECT_TIMEOUT;
        })
        .with_performance_config(|p| p.default_command_timeout = CONNECT_TIMEOUT)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, client.init()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    }
    let pong: Result<String, _> = client.ping(None).await;
    pong.map_err(|e| unreachable(format!("PING failed: {e}")))?;
    Ok(client)
}
