//! Security of the running service, against the real Postgres and Redis: secrets never leave
//! it (logs, metrics, bodies, `config`, `Debug`), admin routes and other users' data are
//! refused without side effects, hostile requests get a 4xx and leave it serving, and slow
//! clients are cut off by `HEADER_READ_TIMEOUT`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use unite_hub::Config;
use unite_testkit::{TestPostgres, TestRedis};

const ADMIN: &str = "test-admin-token-0123456789";
const PASSWORD: &str = "pw-123456";

// ---------------------------------------------------------------------------------------------
// Helpers: an in-process service (like tests/e2e.rs), users, raw HTTP.

struct Hub {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Hub {
    async fn start(
        database_url: &str,
        redis_url: Option<&str>,
        namespace: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut vars: BTreeMap<String, String> = [
            ("DATABASE_URL", database_url),
            ("ADMIN_TOKEN", ADMIN),
            ("CACHE_NAMESPACE", namespace),
            ("WARM_ON_START", "false"),
            ("DATABASE_CONNECT_TIMEOUT", "2s"),
            ("REDIS_TIMEOUT", "500ms"),
            ("MAX_BODY_BYTES", "16384"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        if let Some(url) = redis_url {
            vars.insert("REDIS_URL".into(), url.into());
        }
        for (k, v) in extra {
            vars.insert((*k).into(), (*v).into());
        }
        let config = Config::from_vars(&vars).expect("test config is valid");
        let state = unite_hub::serve::prepare(config, None)
            .await
            .expect("state builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(unite_hub::serve::run(listener, state, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A user created straight in the database: (id, email).
async fn user(pg: &TestPostgres, plan: &str) -> (i64, String) {
    let email = format!("sec{}@example.com", unique());
    let hash = unite_hub::auth::hash_password(PASSWORD).unwrap();
    let id: i64 = pg
        .client()
        .await
        .query_one(
            "INSERT INTO users (email, name, password_hash, plan) VALUES ($1, 'T', $2, $3) RETURNING id",
            &[&email, &hash, &plan],
        )
        .await
        .unwrap()
        .get(0);
    (id, email)
}

async fn sign_in(c: &reqwest::Client, base: &str, email: &str) -> String {
    let r = c
        .post(format!("{base}/api/sessions"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let id = body["error"]["correlation_id"].as_str().unwrap_or_default();
    assert_eq!(
        id.len(),
        32,
        "every error carries the correlation id: {body}"
    );
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// Sends raw bytes (the request should say `Connection: close`) and reads until the server
/// closes, bounded. Returns the status code, if a response came, and everything read.
async fn raw(addr: SocketAddr, request: &[u8]) -> (Option<u16>, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    (status, text)
}

/// The JSON body of a raw response.
fn raw_body(text: &str) -> Value {
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

async fn still_serving(c: &reqwest::Client, hub: &Hub) {
    let r = c.get(hub.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the service keeps answering");
}

// ---------------------------------------------------------------------------------------------
// Secrets.

/// A Postgres login role with a password, for one test, dropped afterwards.
struct Role {
    name: String,
    password: String,
    base_url: String,
}

impl Role {
    async fn create(pg: &TestPostgres) -> Self {
        let n = unique();
        let role = Self {
            name: format!("unite_sec_{n}"),
            password: format!("Db-Pa55-{n}-{:x}", rand_u64()),
            base_url: pg.base_url().to_owned(),
        };
        let sql = format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{pw}'; GRANT USAGE, CREATE ON SCHEMA {schema} TO {name};",
            name = role.name,
            pw = role.password,
            schema = pg.schema(),
        );
        pg.client().await.batch_execute(&sql).await.unwrap();
        role
    }

    /// `url` (the test's schema) with this role's name and password.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{}:{}@{host}", self.name, self.password)
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let (url, name) = (self.base_url.clone(), self.name.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP OWNED BY {name} CASCADE; DROP ROLE {name}"))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Everything one capture saw, for the final search.
#[derive(Default)]
struct Seen {
    text: Mutex<String>,
}

impl Seen {
    fn add(&self, what: &str, s: &str) {
        if let Ok(mut t) = self.text.lock() {
            t.push_str(&format!("\n--- {what}\n{s}"));
        }
    }
    fn get(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

fn binary() -> tokio::process::Command {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_unite-hub"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_metrics_bodies_or_config_output() {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let role = Role::create(&pg).await;
    let database_url = role.url(pg.url());
    let admin = format!("Adm1n-{}-{:x}", unique(), rand_u64());
    let wrong_admin = format!("Wr0ng-{}-{:x}", unique(), rand_u64());
    let vars: Vec<(&str, String)> = vec![
        ("DATABASE_URL", database_url.clone()),
        ("REDIS_URL", redis.url().to_owned()),
        ("CACHE_NAMESPACE", format!("{}hub:", redis.prefix())),
        ("ADMIN_TOKEN", admin.clone()),
        ("BIND_ADDR", "127.0.0.1:0".into()),
        ("WARM_ON_START", "true".into()),
        // Everything the service and its libraries say, not only what operators usually see.
        ("RUST_LOG", "debug".into()),
        ("LOG_FORMAT", "json".into()),
        ("SHUTDOWN_GRACE", "5s".into()),
    ];
    let seen = Arc::new(Seen::default());

    // `Debug` of the configuration (and of every way it is shown).
    let map: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let config = Config::from_vars(&map).unwrap();
    seen.add("Config Debug", &format!("{config:?}\n{config:#?}"));
    seen.add("redacted_lines", &config.redacted_lines().join("\n"));

    // `unite-hub config`, and a start-up refused for bad values (one of them a pasted secret).
    let out = binary()
        .arg("config")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("DATABASE_URL=") && printed.contains("***"),
        "{printed}"
    );
    seen.add("config stdout", &printed);
    seen.add("config stderr", &String::from_utf8_lossy(&out.stderr));
    let out = binary()
        .arg("config")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .env("BIND_ADDR", &admin)
        .env("DATABASE_TLS", &role.password)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "bad config exits 2");
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        refused.contains("BIND_ADDR") && refused.contains("DATABASE_TLS"),
        "{refused}"
    );
    seen.add("bad config stderr", &refused);

    // The service itself, as operators run it: its own logging set-up, stdout and stderr kept.
    let mut child = binary()
        .arg("serve")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (addr_tx, addr_rx) = oneshot::channel::<String>();
    let addr_tx = Arc::new(Mutex::new(Some(addr_tx)));
    let mut readers = Vec::new();
    for (name, pipe) in [
        (
            "stdout",
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        ),
        ("stderr", Box::new(child.stderr.take().unwrap())),
    ] {
        let seen = seen.clone();
        let addr_tx = addr_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            let mut n = 0usize;
            while let Ok(Some(line)) = lines.next_line().await {
                n += 1;
                if line.contains("unite-hub listening")
                    && let Some(at) = line.find("http://127.0.0.1:")
                {
                    let port: String = line[at + 17..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Some(tx) = addr_tx.lock().ok().and_then(|mut t| t.take()) {
                        let _ = tx.send(format!("http://127.0.0.1:{port}"));
                    }
                }
                seen.add(name, &line);
            }
            n
        }));
    }
    let base = tokio::time::timeout(Duration::from_secs(60), addr_rx)
        .await
        .expect("the service starts within a minute")
        .expect("the service says where it listens");

    let c = client();
    let (uid, email) = user(&pg, "pro").await;
    let (_, other_email) = user(&pg, "free").await;
    let mut bodies = Vec::new();
    macro_rules! send {
        ($req:expr) => {{
            let r = $req.send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            bodies.push(format!("{status} {text}"));
            (status, text)
        }};
    }

    let (status, _) = send!(c.get(format!("{base}/api/health")));
    assert_eq!(
        status,
        StatusCode::OK,
        "healthy with the password-protected role"
    );
    // A wrong password (the other user's secret), then the right one.
    let (status, _) = send!(
        c.post(format!("{base}/api/sessions"))
            .json(&json!({ "email": email, "password": role.password }))
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let token = sign_in(&c, &base, &email).await;
    let other = sign_in(&c, &base, &other_email).await;
    let (status, _) = send!(
        c.get(format!("{base}/api/sessions/validate"))
            .bearer_auth(&token)
    );
    assert_eq!(status, StatusCode::OK);
    // Contacts CRUD.
    let (status, created) = send!(
        c.post(format!("{base}/api/contacts"))
            .bearer_auth(&token)
            .json(&json!({ "name": "Ada", "email": "ada@example.com" }))
    );
    assert_eq!(status, StatusCode::CREATED);
    let id = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_i64()
        .unwrap();
    let path = format!("{base}/api/contacts/{id}");
    send!(c.get(&path).bearer_auth(&token));
    send!(c.get(&path).bearer_auth(&token));
    send!(
        c.put(&path)
            .bearer_auth(&token)
            .json(&json!({ "name": "Ada L." }))
    );
    send!(
        c.get(format!("{base}/api/contacts?limit=5"))
            .bearer_auth(&token)
    );
    let (status, _) = send!(c.get(&path).bearer_auth(&other));
    assert_eq!(status, StatusCode::NOT_FOUND);
    send!(c.delete(&path).bearer_auth(&token));
    send!(
        c.get(format!("{base}/api/reports/contacts"))
            .bearer_auth(&token)
    );
    // Secrets where they do not belong: in a query, in a correlation header, as Basic auth.
    send!(c.get(format!(
        "{base}/api/contacts?access_token={token}&pw={}",
        role.password
    )));
    send!(
        c.get(format!("{base}/api/sessions/validate"))
            .header("x-request-id", &token)
            .header("x-correlation-id", &admin)
            .header("traceparent", &role.password)
            .bearer_auth(&token)
    );
    send!(
        c.get(format!("{base}/api/sessions/validate"))
            .basic_auth(&email, Some(&role.password))
    );
    send!(
        c.get(format!("{base}/api/sessions/validate"))
            .bearer_auth(auth_like(&token))
    );
    // Admin routes: the token, a wrong one, a user's.
    let overrides = format!("{base}/api/admin/ratelimit/overrides");
    let (status, _) = send!(c.get(&overrides).bearer_auth(&admin));
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send!(c.put(&overrides).bearer_auth(&admin).json(
        &json!({ "subject": format!("user:{uid}"), "rule": { "kind": "exempt" }, "reason": "test" })
    ));
    assert_eq!(status, StatusCode::OK);
    send!(
        c.delete(format!("{overrides}?subject=user:{uid}"))
            .bearer_auth(&admin)
    );
    let (status, _) = send!(c.get(&overrides).bearer_auth(&wrong_admin));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send!(c.get(&overrides).bearer_auth(&token));
    assert_eq!(status, StatusCode::FORBIDDEN);
    send!(
        c.post(format!("{base}/api/admin/cache/invalidate"))
            .bearer_auth(&admin)
            .json(&json!({ "keys": ["contact:v1:1:1"] }))
    );
    send!(c.post(format!("{base}/api/admin/warm")).bearer_auth(&admin));
    send!(
        c.get(format!("{base}/api/admin/warm/status"))
            .bearer_auth(&admin)
    );
    send!(c.get(format!("{base}/api/health/redis")));
    send!(c.get(format!("{base}/api/health/hotkeys")));
    let (status, metrics) = send!(c.get(format!("{base}/metrics")));
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("unite_http_requests_total") || metrics.contains("http_"),
        "{metrics}"
    );
    seen.add("metrics", &metrics);

    // SIGTERM: drain, save, flush; then every line it wrote is in `seen`.
    let pid = child.id().expect("running");
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    let exited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    if exited.is_err() {
        let _ = child.kill().await;
    }
    let mut lines = 0;
    for reader in readers {
        lines += tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
    }
    // Bodies: every error and every answer, except the sign-ins that hand the tokens out.
    seen.add("bodies", &bodies.join("\n"));

    let all = seen.get();
    eprintln!(
        "searched {lines} log lines, {} response bodies, {} bytes of /metrics",
        bodies.len(),
        metrics.len()
    );
    assert!(lines > 30, "the service logged ({lines} lines): {all}");
    assert!(
        all.contains("\"request\""),
        "request log lines were captured"
    );
    for (what, secret) in [
        ("database password", role.password.as_str()),
        ("admin token", admin.as_str()),
        ("wrong admin token", wrong_admin.as_str()),
        ("session token A", token.as_str()),
        ("session token B", other.as_str()),
        ("user password", PASSWORD),
    ] {
        if let Some(at) = all.find(secret) {
            let from = all[..at].rfind("\n---").unwrap_or(0);
            let context = &all[from..(at + secret.len() + 200).min(all.len())];
            panic!("the {what} appears in the output: …{context}…");
        }
    }
    drop(role);
}

/// A token-shaped value that is not a session (43 URL-safe characters).
fn auth_like(token: &str) -> String {
    token.chars().rev().collect()
}

// ---------------------------------------------------------------------------------------------
// Access.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_refuse_everyone_without_the_admin_token_and_change_nothing() {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let ns = format!("{}hub:", redis.prefix());
    // Loopback is a trusted proxy here, so each refused request can come from a client
    // address of its own: anonymous ones would otherwise share the public quota (20 a minute)
    // and meet a 429 before the admin check.
    let hub = Hub::start(
        pg.url(),
        Some(redis.url()),
        &ns,
        &[("TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await;
    let c = client();
    let base = hub.url("");
    let mut client_ip = 0u32;
    let mut next_ip = move || {
        client_ip += 1;
        std::net::Ipv4Addr::from(0xC633_6400 + client_ip).to_string() // 198.51.100.0/24 on
    };
    let (uid, email) = user(&pg, "free").await;
    let token = sign_in(&c, &base, &email).await;
    let (other_uid, _) = user(&pg, "free").await;

    // Something for each admin action to change: a cached contact, an existing override.
    let r = c
        .post(hub.url("/api/contacts"))
        .bearer_auth(&token)
        .json(&json!({ "name": "Kept" }))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let contact_key = unite_hub::routes::contacts::contact_key(uid, id);
    let redis_key = format!("{ns}{contact_key}");
    let cached = |client: fred::clients::Client, key: String| async move {
        client.exists::<i64, _>(key).await.unwrap() == 1
    };
    assert!(
        cached(redis.client(), redis_key.clone()).await,
        "written through"
    );
    let kept = json!({ "subject": format!("user:{other_uid}"), "rule": { "kind": "exempt" } });
    let r = c
        .put(hub.url("/api/admin/ratelimit/overrides"))
        .bearer_auth(ADMIN)
        .json(&kept)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let block_me = json!({ "subject": format!("user:{uid}"), "rule": { "kind": "block" } });
    let wrong = "wrong-admin-token-0123456789";
    // (credential, status): none, a wrong token, a user's session, the token in other places.
    let credentials: Vec<(&str, Option<String>, StatusCode)> = vec![
        ("none", None, StatusCode::UNAUTHORIZED),
        (
            "wrong",
            Some(format!("Bearer {wrong}")),
            StatusCode::FORBIDDEN,
        ),
        (
            "session",
            Some(format!("Bearer {token}")),
            StatusCode::FORBIDDEN,
        ),
        (
            "basic",
            Some(format!("Basic {ADMIN}")),
            StatusCode::FORBIDDEN,
        ),
        (
            "prefix",
            Some(format!("Bearer {}", &ADMIN[..ADMIN.len() - 1])),
            StatusCode::FORBIDDEN,
        ),
        (
            "longer",
            Some(format!("Bearer {ADMIN}x")),
            StatusCode::FORBIDDEN,
        ),
        ("empty", Some("Bearer ".to_owned()), StatusCode::FORBIDDEN),
    ];
    for (label, auth, expected) in &credentials {
        let requests = [
            c.get(hub.url("/api/admin/ratelimit/overrides")),
            c.put(hub.url("/api/admin/ratelimit/overrides"))
                .json(&block_me),
            c.delete(hub.url(&format!(
                "/api/admin/ratelimit/overrides?subject=user:{other_uid}"
            ))),
            c.post(hub.url("/api/admin/cache/invalidate"))
                .json(&json!({ "keys": [contact_key] })),
            c.post(hub.url("/api/admin/warm")),
            c.get(hub.url("/api/admin/warm/status")),
            // The token anywhere but the Authorization header does not count.
            c.get(hub.url(&format!("/api/admin/ratelimit/overrides?token={ADMIN}")))
                .header("x-admin-token", ADMIN),
        ];
        for request in requests {
            let request = request.header("x-forwarded-for", next_ip());
            let request = match auth {
                Some(a) => request.header("authorization", a),
                None => request,
            };
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), *expected, "{label}");
            let body: Value = r.json().await.unwrap();
            assert_error(
                &body,
                if *expected == StatusCode::UNAUTHORIZED {
                    "unauthorized"
                } else {
                    "forbidden"
                },
            );
        }
    }
    // A rate-limit override cannot be set through a user's routes either (no such field).
    let r = c
        .post(hub.url("/api/contacts"))
        .bearer_auth(&token)
        .json(
            &json!({ "name": "x", "rule": { "kind": "exempt" }, "subject": format!("user:{uid}") }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Nothing happened: the override list is as it was, the key is still cached, no warm-up
    // ran, and the user is not blocked.
    let list: Value = c
        .get(hub.url("/api/admin/ratelimit/overrides"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subjects: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    assert_eq!(subjects, [format!("user:{other_uid}")], "{list}");
    assert!(cached(redis.client(), redis_key).await, "not invalidated");
    let status: Value = c
        .get(hub.url("/api/admin/warm/status"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["progress"]["running"], false, "{status}");
    assert_eq!(status["progress"]["finished"], json!([]), "{status}");
    let r = c
        .get(hub.url("/api/sessions/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "not blocked");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_session_cannot_read_or_change_another_users_contacts() {
    let pg = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let hub = Hub::start(
        pg.url(),
        Some(redis.url()),
        &format!("{}hub:", redis.prefix()),
        &[],
    )
    .await;
    let c = client();
    let base = hub.url("");
    let (_, a_email) = user(&pg, "enterprise").await;
    let (_, b_email) = user(&pg, "free").await;
    let a = sign_in(&c, &base, &a_email).await;
    let b = sign_in(&c, &base, &b_email).await;

    let r = c
        .post(hub.url("/api/contacts"))
        .bearer_auth(&b)
        .json(&json!({ "name": "B's secret contact", "notes": "private" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let before: Value = r.json().await.unwrap();
    let id = before["id"].as_i64().unwrap();
    let path = format!("/api/contacts/{id}");

    // A, cached or not, by every verb: 404, as if it did not exist (no 403 that confirms it).
    for _ in 0..2 {
        let r = c.get(hub.url(&path)).bearer_auth(&a).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_error(&r.json().await.unwrap(), "not_found");
        let r = c
            .get(hub.url(&path))
            .bearer_auth(&a)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "no 304 for someone else's ETag"
        );
        let r = c
            .put(hub.url(&path))
            .bearer_auth(&a)
            .json(&json!({ "name": "hijacked" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = c
            .delete(hub.url(&path))
            .bearer_auth(&a)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let page: Value = c
        .get(hub.url("/api/contacts?limit=200"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        page.as_array().unwrap().iter().all(|x| x["id"] != id),
        "A's list holds only A's contacts: {page}"
    );
    let report: Value = c
        .get(hub.url("/api/reports/contacts"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!report.to_string().contains("secret contact"), "{report}");

    // B's contact is unchanged, in the cache and in Postgres.
    let r = c.get(hub.url(&path)).bearer_auth(&b).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    let after: Value = r.json().await.unwrap();
    assert_eq!(after, before);
    let row = pg
        .client()
        .await
        .query_one("SELECT name, version FROM contacts WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "B's secret contact");
    assert_eq!(row.get::<_, i64>(1), before["version"].as_i64().unwrap());
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Hostile input.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_4xx_and_the_service_keeps_serving() {
    const BAD_JSON: &[u8] = b"{\"name\":\"\xff\xfe\"}";
    let pg = TestPostgres::new().await;
    let hub = Hub::start(pg.url(), None, &format!("sec{}:", unique()), &[]).await;
    let c = client();
    let (_, email) = user(&pg, "enterprise").await;
    let token = sign_in(&c, &hub.url(""), &email).await;
    let auth = format!("Authorization: Bearer {token}\r\n");

    // Oversized bodies: declared, and chunked without a length.
    let r = c
        .post(hub.url("/api/contacts"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(vec![b' '; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&r.json().await.unwrap(), "payload_too_large");
    let mut chunked = format!(
        "POST /api/contacts HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..64 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw(hub.addr, &chunked).await;
    assert_eq!(status, Some(413), "{text}");
    assert_error(&raw_body(&text), "payload_too_large");
    still_serving(&c, &hub).await;

    // Oversized heads: one huge header, very many headers, a very long URL.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a 1 MiB header",
            format!(
                "GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(1 << 20)
            )
            .into_bytes(),
        ),
        (
            "500 headers",
            format!(
                "GET /api/health HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
                (0..500)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
        ),
        (
            "a 100 KiB URL",
            format!(
                "GET /api/contacts/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "9".repeat(100 << 10)
            )
            .into_bytes(),
        ),
        (
            "a 1 MiB query",
            format!(
                "GET /api/contacts?after={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "1".repeat(1 << 20)
            )
            .into_bytes(),
        ),
    ];
    for (what, request) in cases {
        let (status, text) = raw(hub.addr, &request).await;
        let status = status.unwrap_or_else(|| panic!("{what}: no response: {text:?}"));
        eprintln!("{what}: {status}");
        assert!((400..500).contains(&status), "{what}: {status}");
        still_serving(&c, &hub).await;
    }

    // Invalid UTF-8: percent-encoded in the path and the query, raw in the request line, in
    // a JSON body, in the Authorization header.
    for (what, request, code) in [
        (
            "path",
            format!("GET /api/contacts/%FF%FE HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").into_bytes(),
            Some("bad_request"),
        ),
        (
            "query",
            format!("GET /api/contacts?after=%C3%28 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").into_bytes(),
            Some("bad_request"),
        ),
        (
            "admin query",
            format!("DELETE /api/admin/ratelimit/overrides?subject=%FF HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n").into_bytes(),
            Some("bad_request"),
        ),
        (
            "body",
            [
                format!("POST /api/contacts HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", BAD_JSON.len()).into_bytes(),
                BAD_JSON.to_vec(),
            ]
            .concat(),
            Some("bad_request"),
        ),
        (
            "authorization",
            b"GET /api/sessions/validate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd\r\nConnection: close\r\n\r\n".to_vec(),
            Some("unauthorized"),
        ),
        (
            "raw bytes in the request line",
            b"GET /api/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            None,
        ),
        (
            "not HTTP at all",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
            None,
        ),
    ] {
        let (status, text) = raw(hub.addr, &request).await;
        let status = status.unwrap_or_else(|| panic!("{what}: no response: {text:?}"));
        eprintln!("invalid UTF-8 / bytes, {what}: {status}");
        assert!((400..500).contains(&status), "{what}: {status} {text}");
        if let Some(code) = code {
            assert_error(&raw_body(&text), code);
        }
        still_serving(&c, &hub).await;
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_header_read_timeout_while_others_are_served() {
    let pg = TestPostgres::new().await;
    let hub = Hub::start(
        pg.url(),
        None,
        &format!("sec{}:", unique()),
        &[("HEADER_READ_TIMEOUT", "500ms")],
    )
    .await;
    let c = client();

    // Slowloris: a partial head, then one more header line every 100 ms, for at most 20 s.
    let slow = async {
        let mut stream = TcpStream::connect(hub.addr).await.unwrap();
        stream
            .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        for i in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream
                .write_all(format!("X-Slow-{i}: .\r\n").as_bytes())
                .await
                .is_err()
            {
                return (true, i);
            }
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return (true, i),
                Ok(Ok(_)) => {} // a 408, say: the close follows
                Err(_) => {}    // nothing yet
            }
        }
        (false, 200)
    };
    // A client that connects and says nothing.
    let silent = async {
        let mut stream = TcpStream::connect(hub.addr).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf))
            .await
            .is_ok()
    };
    // Meanwhile everyone else is served.
    let others = async {
        let mut ok = 0;
        for _ in 0..10 {
            let r = c.get(hub.url("/api/health")).send().await.unwrap();
            if r.status() == StatusCode::OK {
                ok += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ok
    };
    let ((closed, lines_sent), silent_closed, served) = tokio::join!(slow, silent, others);
    eprintln!("slow client disconnected after {lines_sent} header lines, 100 ms apart");
    assert!(
        closed,
        "the slow client was never disconnected ({lines_sent} lines sent)"
    );
    assert!(silent_closed, "the silent client was never disconnected");
    assert_eq!(served, 10, "other clients were served meanwhile");

    // An idle keep-alive connection is closed too, after a complete exchange.
    let mut stream = TcpStream::connect(hub.addr).await.unwrap();
    stream
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf))
        .await
        .is_ok();
    assert!(closed, "an idle keep-alive connection was kept for ever");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    still_serving(&c, &hub).await;
    hub.stop().await;
}
