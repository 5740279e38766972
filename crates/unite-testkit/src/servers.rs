//! Throwaway local servers started from the OS binaries, on free loopback ports, stopped on
//! drop (also when the test panics, since drop runs while unwinding).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, TestCerts};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A free TCP port on `127.0.0.1` (bound and released, so another process could take it in
/// between: callers retry on a bind failure).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How to start a [`RedisServer`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RedisOptions<'a> {
    /// Serve TLS with these certificates (`rediss://`), and no plaintext port.
    pub tls: Option<&'a TestCerts>,
    /// More `redis-server` arguments, e.g. `["--tls-protocols", "TLSv1.1"]`.
    pub extra_args: Vec<String>,
}

impl<'a> RedisOptions<'a> {
    /// TLS only, with `certs`.
    #[must_use]
    pub fn tls(mut self, certs: &'a TestCerts) -> Self {
        self.tls = Some(certs);
        self
    }

    /// Adds `redis-server` arguments.
    #[must_use]
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A `redis-server` of the test's own on a free port of `127.0.0.1`; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    tls: bool,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a plaintext Redis that keeps nothing on disk.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a Redis as `options` say.
    pub fn start_with(options: RedisOptions<'_>) -> Result<Self, Error> {
        let dir = tempfile::Builder::new().prefix("unite-redis-").tempdir()?;
        let port = free_port()?;
        let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push("--dir".into());
        args.push(path_str(dir.path()));
        args.push("--logfile".into());
        args.push(path_str(&dir.path().join("redis.log")));
        match options.tls {
            Some(certs) => {
                args.extend(["--port".into(), "0".into(), "--tls-port".into()]);
                args.push(port.to_string());
                args.extend([
                    "--tls-cert-file".into(),
                    path_str(&certs.cert_path()),
                    "--tls-key-file".into(),
                    path_str(&certs.key_path()),
                    "--tls-ca-cert-file".into(),
                    path_str(&certs.ca_path()),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]);
            }
            None => args.extend(["--port".into(), port.to_string()]),
        }
        args.extend(options.extra_args);
        let mut server = Self {
            child: None,
            port,
            tls: options.tls.is_some(),
            args,
            dir,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Start {
                what: "redis-server",
                reason: format!(
                    "{e} (is the redis-server binary installed? `{}` installs it)",
                    crate::START_SERVICES_HINT
                ),
            })?;
        self.child = Some(child);
        let ready = wait_until(|| {
            if self.tls {
                TcpStream::connect(self.addr()).is_ok()
            } else {
                redis_ping(self.addr())
            }
        });
        if !ready {
            let log = log_tail(&self.dir.path().join("redis.log"));
            self.stop();
            return Err(Error::Start {
                what: "redis-server",
                reason: format!("not ready on port {} within 30s; log:\n{log}", self.port),
            });
        }
        Ok(())
    }

    /// The URL to reach it (`redis://` or `rediss://`).
    #[must_use]
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Its address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`RedisServer::stop`]); its data is gone.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        self.spawn()
    }

    /// The last lines of its log file.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("redis.log"))
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How to start a [`PostgresServer`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PostgresOptions<'a> {
    /// Turn on `ssl` with these certificates.
    pub tls: Option<&'a TestCerts>,
    /// Refuse plaintext connections over TCP (`hostnossl ... reject`).
    pub tls_only: bool,
    /// More `postgresql.conf` settings, e.g. `("ssl_min_protocol_version", "TLSv1")`.
    pub settings: Vec<(String, String)>,
    /// Configure the server as the primary of streaming replicas (see
    /// [`PostgresServer::start_primary`]).
    pub replication: bool,
}

impl<'a> PostgresOptions<'a> {
    /// TLS on with `certs`; plaintext over TCP refused.
    #[must_use]
    pub fn tls_only(mut self, certs: &'a TestCerts) -> Self {
        self.tls = Some(certs);
        self.tls_only = true;
        self
    }

    /// Adds a `postgresql.conf` setting.
    #[must_use]
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Configures the server as the primary of streaming replicas: `wal_level = replica`,
    /// WAL senders and slots, WAL kept for replicas that fall behind, and commits flushed
    /// (`synchronous_commit = on`, so replicas receive each commit at once).
    #[must_use]
    pub fn replication(mut self) -> Self {
        self.replication = true;
        self
    }
}

/// `postgresql.conf` settings of a primary of streaming replicas.
const PRIMARY_SETTINGS: &str = "wal_level = replica\nmax_wal_senders = 10\n\
     max_replication_slots = 10\nwal_keep_size = '256MB'\nsynchronous_commit = on\n\
     wal_writer_delay = '10ms'\nhot_standby = on\n";

/// A PostgreSQL cluster of the test's own (initdb into a temporary folder), on a free port
/// of `127.0.0.1`, trust auth for user `postgres`; stopped and deleted on drop.
///
/// It can also be a streaming replica of another one ([`PostgresServer::start_replica`]):
///
/// ```no_run
/// # fn demo() -> Result<(), unite_testkit::Error> {
/// use unite_testkit::PostgresServer;
/// let primary = PostgresServer::start_primary()?;
/// let replica = primary.start_replica()?; // pg_basebackup -R, on another free port
/// assert!(replica.is_replica());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
    replica: bool,
}

impl PostgresServer {
    /// Starts a plaintext server.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(PostgresOptions::default())
    }

    /// Starts a plaintext server configured as the primary of streaming replicas (see
    /// [`PostgresOptions::replication`]); then [`start_replica`](Self::start_replica) makes
    /// replicas of it.
    pub fn start_primary() -> Result<Self, Error> {
        Self::start_with(PostgresOptions::default().replication())
    }

    /// Creates and starts a hot-standby streaming replica of this server on another free port
    /// of `127.0.0.1`: `pg_basebackup -R -X stream` from this server (over TCP, as the
    /// replication user `postgres`), then `pg_ctl start`. The replica follows this server
    /// until either is stopped; it is stopped and deleted on drop, like any
    /// [`PostgresServer`].
    ///
    /// This server should have been started with [`start_primary`](Self::start_primary) (or
    /// [`PostgresOptions::replication`]): without it, commits reach the replica late.
    ///
    /// # Errors
    /// [`Error::Start`] when this server is stopped, when `pg_basebackup` fails (its output is
    /// in the message), or when the replica does not start (with its log tail).
    pub fn start_replica(&self) -> Result<Self, Error> {
        if !self.running {
            return Err(start_err(format!(
                "cannot make a replica of the server on port {}: it is stopped",
                self.port
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("unite-pg-replica-")
            .tempdir()?;
        let data = dir.path().join("data");
        let owner = DbOwner::detect()?;
        owner.chown(dir.path())?;
        let out = owner
            .command(&self.bin.join("pg_basebackup"))
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args([
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "-c",
                "fast",
                "-D",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| start_err(format!("pg_basebackup: {e}")))?;
        if !out.status.success() {
            return Err(start_err(format!(
                "pg_basebackup from port {} failed: {}",
                self.port,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        // The copied postgresql.conf names the primary's socket folder; later lines win.
        append(
            &data.join("postgresql.conf"),
            &format!(
                "unix_socket_directories = '{}'\nhot_standby = on\n\
                 wal_receiver_status_interval = '1s'\n",
                path_str(dir.path())
            ),
        )?;
        let mut replica = Self {
            bin: self.bin.clone(),
            dir,
            port: free_port()?,
            running: false,
            replica: true,
        };
        replica.pg_ctl_start()?;
        Ok(replica)
    }

    /// Starts a server as `options` say.
    pub fn start_with(options: PostgresOptions<'_>) -> Result<Self, Error> {
        let bin = postgres_bindir()?;
        let dir = tempfile::Builder::new().prefix("unite-pg-").tempdir()?;
        let data = dir.path().join("data");
        let owner = DbOwner::detect()?;
        owner.chown(dir.path())?;
        let out = owner
            .command(&bin.join("initdb"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .map_err(|e| start_err(format!("initdb: {e}")))?;
        if !out.status.success() {
            return Err(start_err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 200\n",
        );
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            path_str(dir.path())
        ));
        let mut hba = String::from("local all all trust\n");
        if let Some(certs) = options.tls {
            for (src, name) in [
                (certs.cert_path(), "server.crt"),
                (certs.key_path(), "server.key"),
                (certs.ca_path(), "root.crt"),
            ] {
                let dst = data.join(name);
                std::fs::copy(&src, &dst)?;
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600))?;
                owner.chown(&dst)?;
            }
            conf.push_str(
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
                 ssl_ca_file = 'root.crt'\n",
            );
            hba.push_str("hostssl all all 127.0.0.1/32 trust\n");
            hba.push_str("hostssl replication all 127.0.0.1/32 trust\n");
        }
        if options.tls_only {
            hba.push_str("hostnossl all all 127.0.0.1/32 reject\n");
        } else {
            hba.push_str("host all all 127.0.0.1/32 trust\n");
            hba.push_str("host replication all 127.0.0.1/32 trust\n");
        }
        if options.replication {
            conf.push_str(PRIMARY_SETTINGS);
        }
        for (k, v) in &options.settings {
            conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        append(&data.join("postgresql.conf"), &conf)?;
        std::fs::write(data.join("pg_hba.conf"), hba)?;
        owner.chown(&data.join("pg_hba.conf"))?;

        let mut server = Self {
            bin,
            dir,
            port: free_port()?,
            running: false,
            replica: false,
        };
        server.pg_ctl_start()?;
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&mut self) -> Result<(), Error> {
        let owner = DbOwner::detect()?;
        let log = self.dir.path().join("postgres.log");
        let out = owner
            .command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "30", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| start_err(format!("pg_ctl start: {e}")))?;
        if !out.status.success() {
            return Err(start_err(format!(
                "pg_ctl start failed on port {}: {}\nlog:\n{}",
                self.port,
                String::from_utf8_lossy(&out.stderr),
                log_tail(&log)
            )));
        }
        self.running = true;
        Ok(())
    }

    /// The URL of its `postgres` database (plaintext; add `sslmode` as the test needs).
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Its address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.data()
    }

    /// `true` when it was made by [`start_replica`](Self::start_replica).
    #[must_use]
    pub fn is_replica(&self) -> bool {
        self.replica
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        if let Ok(owner) = DbOwner::detect() {
            let _ = owner
                .command(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdin(Stdio::null())
                .output();
        }
        self.running = false;
    }

    /// Starts it again on the same port, with its data.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        self.pg_ctl_start()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_err(reason: String) -> Error {
    Error::Start {
        what: "postgres",
        reason,
    }
}

/// The folder of the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`).
fn postgres_bindir() -> Result<PathBuf, Error> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().ok_or_else(|| {
        start_err(format!(
            "no initdb found (pg_config --bindir, /usr/lib/postgresql/*/bin); `{}` installs PostgreSQL",
            crate::START_SERVICES_HINT
        ))
    })
}

/// Who runs the Postgres binaries: initdb refuses root, so as root they run as `postgres`.
struct DbOwner {
    /// `Some((uid, gid))` of the `postgres` user when we are root.
    switch_to: Option<(u32, u32)>,
}

impl DbOwner {
    fn detect() -> Result<Self, Error> {
        let uid = std::fs::metadata("/proc/self")?.uid();
        if uid != 0 {
            return Ok(Self { switch_to: None });
        }
        let id = |flag: &str| -> Result<u32, Error> {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .map_err(|e| start_err(format!("id {flag} postgres: {e}")))?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| start_err("running as root and there is no `postgres` user".into()))
        };
        Ok(Self {
            switch_to: Some((id("-u")?, id("-g")?)),
        })
    }

    fn command(&self, program: &Path) -> Command {
        match self.switch_to {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn chown(&self, path: &Path) -> Result<(), Error> {
        if let Some((uid, gid)) = self.switch_to {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }
}

pub(crate) fn wait_until(mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < START_TIMEOUT {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub(crate) fn redis_ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())
}

pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

pub(crate) fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
