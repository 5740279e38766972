//! Throwaway Redis high-availability set-ups from the OS binaries: a Sentinel group (master,
//! replica, three sentinels) and a three-master Cluster, on free loopback ports, stopped and
//! deleted on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::types::config::Config;

use crate::servers::{log_tail, path_str, redis_ping, wait_until};
use crate::{Error, RedisOptions, RedisServer, free_port};

/// How long a group may take to come up, and a failover to complete.
const GROUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect and read timeout of one probe command.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often readiness and failover are polled.
const POLL: Duration = Duration::from_millis(25);

fn start_err(what: &'static str, reason: String) -> Error {
    Error::Start { what, reason }
}

/// A reply of the small RESP reader below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Text(String),
    Error(String),
    Int(i64),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    fn text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// Sends one command to the Redis (or Sentinel) at `addr` and reads its reply, with short
/// timeouts: the probes never hang on a dead server.
pub(crate) fn command(addr: SocketAddr, args: &[&str]) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes())?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    let int = || rest.parse::<i64>().map_err(|_| bad("bad length"));
    match kind {
        "+" => Ok(Reply::Text(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Int(int()?)),
        "$" => {
            let Ok(n) = usize::try_from(int()?) else {
                return Ok(Reply::Nil);
            };
            let mut buf = vec![0u8; n + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n);
            Ok(Reply::Text(String::from_utf8_lossy(&buf).into_owned()))
        }
        "*" => {
            let Ok(n) = usize::try_from(int()?) else {
                return Ok(Reply::Nil);
            };
            (0..n)
                .map(|_| read_reply(r))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        _ => Err(bad("unexpected reply type")),
    }
}

/// The `field:value` lines of an `INFO` or `CLUSTER INFO` reply.
fn info_field(addr: SocketAddr, args: &[&str], field: &str) -> Option<String> {
    let Ok(Reply::Text(text)) = command(addr, args) else {
        return None;
    };
    text.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One `redis-server --sentinel` process with its own folder (it rewrites its config file).
#[derive(Debug)]
struct Sentinel {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(service: &str, master: SocketAddr) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("unite-sentinel-")
            .tempdir()?;
        let port = free_port()?;
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {service} {ip} {mport} 2\n\
                 sentinel down-after-milliseconds {service} 1000\n\
                 sentinel failover-timeout {service} 3000\n\
                 sentinel parallel-syncs {service} 1\n",
                dir = path_str(dir.path()),
                ip = master.ip(),
                mport = master.port(),
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                start_err(
                    "redis sentinel",
                    format!(
                        "{e} (is the redis-server binary installed? `{}` installs it)",
                        crate::START_SERVICES_HINT
                    ),
                )
            })?;
        let mut sentinel = Self {
            child: Some(child),
            port,
            dir,
        };
        if !wait_until(|| redis_ping(sentinel.addr())) {
            let log = sentinel.log_tail();
            sentinel.stop();
            return Err(start_err(
                "redis sentinel",
                format!("not ready on port {port} within 30s; log:\n{log}"),
            ));
        }
        Ok(sentinel)
    }

    fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("sentinel.log"))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `SENTINEL MASTER <service>` as field → value pairs.
    fn master_state(&self, service: &str) -> Vec<(String, String)> {
        let Ok(Reply::Array(items)) = command(self.addr(), &["SENTINEL", "MASTER", service]) else {
            return Vec::new();
        };
        items
            .chunks(2)
            .filter_map(|kv| match kv {
                [Reply::Text(k), Reply::Text(v)] => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// Where this sentinel says the master of `service` is.
    fn master_addr(&self, service: &str) -> Option<SocketAddr> {
        let reply = command(
            self.addr(),
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", service],
        )
        .ok()?;
        let Reply::Array(parts) = reply else {
            return None;
        };
        let ip = parts.first()?.text()?.parse().ok()?;
        let port = parts.get(1)?.text()?.parse().ok()?;
        Some(SocketAddr::new(ip, port))
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What [`RedisSentinelGroup::kill_master`] observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failover {
    /// From the kill to the moment every sentinel names the new master and it says
    /// `role:master`.
    pub took: Duration,
    /// The new master (the former replica).
    pub new_master: SocketAddr,
}

/// A Redis Sentinel set-up of the test's own: a master, one replica of it (`replicaof`), and
/// three sentinels watching it as `mymaster` (quorum 2, `down-after-milliseconds` 1000,
/// `failover-timeout` 3000), all on free ports of `127.0.0.1`. Every process is killed and
/// every folder deleted on drop.
///
/// ```no_run
/// # fn demo() -> Result<(), unite_testkit::Error> {
/// use unite_testkit::RedisSentinelGroup;
/// let mut group = RedisSentinelGroup::start()?;
/// let url = group.url(); // redis-sentinel://127.0.0.1:p1/0?sentinelServiceName=mymaster&node=...
/// let failover = group.kill_master()?; // SIGKILL, then waits for the replica's promotion
/// assert_eq!(failover.new_master, group.replica_addr());
/// # let _ = url; Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisSentinelGroup {
    // Sentinels first: they are dropped (killed) before the servers, so none starts a failover
    // while the group is torn down.
    sentinels: Vec<Sentinel>,
    master: RedisServer,
    replica: RedisServer,
    service: String,
}

impl RedisSentinelGroup {
    /// The service name the sentinels monitor.
    pub const SERVICE: &'static str = "mymaster";

    /// Starts the master, the replica and the three sentinels, and waits (at most 30 s) until
    /// the replica is in sync and every sentinel knows the replica and the two other
    /// sentinels, so a failover can happen.
    ///
    /// # Errors
    /// [`Error::Start`] naming the process that did not come up, with its log tail.
    pub fn start() -> Result<Self, Error> {
        let master = RedisServer::start()?;
        let replica = RedisServer::start_with(RedisOptions::default().args([
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master.port().to_string(),
        ]))?;
        let mut sentinels = Vec::with_capacity(3);
        for _ in 0..3 {
            sentinels.push(Sentinel::start(Self::SERVICE, master.addr())?);
        }
        let group = Self {
            sentinels,
            master,
            replica,
            service: Self::SERVICE.to_owned(),
        };
        let ready = wait_until(|| {
            info_field(
                group.replica.addr(),
                &["INFO", "replication"],
                "master_link_status",
            )
            .as_deref()
                == Some("up")
                && group.sentinels.iter().all(|s| {
                    let state = s.master_state(&group.service);
                    let get = |k: &str| state.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
                    get("flags") == Some("master")
                        && get("num-slaves") == Some("1")
                        && get("num-other-sentinels") == Some("2")
                })
        });
        if !ready {
            let logs: Vec<String> = group
                .sentinels
                .iter()
                .map(|s| format!("sentinel {}:\n{}", s.port, s.log_tail()))
                .collect();
            return Err(start_err(
                "redis sentinel group",
                format!(
                    "the replica did not sync or the sentinels did not find each other within \
                     30s\nreplica log:\n{}\n{}",
                    group.replica.log_tail(),
                    logs.join("\n")
                ),
            ));
        }
        Ok(group)
    }

    /// The monitored service name (`mymaster`).
    #[must_use]
    pub fn service_name(&self) -> &str {
        &self.service
    }

    /// A fred URL for Sentinel mode:
    /// `redis-sentinel://127.0.0.1:<s1>/0?sentinelServiceName=mymaster&node=127.0.0.1:<s2>&node=127.0.0.1:<s3>`.
    #[must_use]
    pub fn url(&self) -> String {
        let mut ports = self.sentinels.iter().map(|s| s.port);
        let first = ports.next().unwrap_or_default();
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{first}/0?sentinelServiceName={}",
            self.service
        );
        for p in ports {
            url.push_str(&format!("&node=127.0.0.1:{p}"));
        }
        url
    }

    /// The fred [`Config`] of [`url`](Self::url) (`ServerConfig::Sentinel`).
    ///
    /// # Errors
    /// [`Error::Setup`] if fred refuses the URL (it should not).
    pub fn config(&self) -> Result<Config, Error> {
        Config::from_url(&self.url()).map_err(|e| Error::Setup {
            service: "Redis",
            reason: format!("fred refused the sentinel URL: {e}"),
        })
    }

    /// The sentinels' addresses.
    #[must_use]
    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(Sentinel::addr).collect()
    }

    /// The first master's address.
    #[must_use]
    pub fn master_addr(&self) -> SocketAddr {
        self.master.addr()
    }

    /// The replica's address (the master after a failover).
    #[must_use]
    pub fn replica_addr(&self) -> SocketAddr {
        self.replica.addr()
    }

    /// A plain `redis://` URL straight to the replica (bypassing the sentinels).
    #[must_use]
    pub fn replica_url(&self) -> String {
        self.replica.url()
    }

    /// Where the sentinels say the master is, when they all agree.
    #[must_use]
    pub fn current_master(&self) -> Option<SocketAddr> {
        let mut seen = self.sentinels.iter().map(|s| s.master_addr(&self.service));
        let first = seen.next()??;
        seen.all(|a| a == Some(first)).then_some(first)
    }

    /// Kills the master (SIGKILL, as a crash would: writes it acknowledged but had not sent
    /// to the replica are lost) and waits (at most 30 s) until every sentinel names the
    /// replica as the master and the replica says `role:master`. Blocking: call it from
    /// `tokio::task::spawn_blocking` or `block_in_place` in async tests.
    ///
    /// # Errors
    /// [`Error::Start`] when the failover did not complete in time (with the sentinels' log
    /// tails).
    pub fn kill_master(&mut self) -> Result<Failover, Error> {
        let start = Instant::now();
        self.master.stop();
        let target = self.replica.addr();
        let done = wait_until_for(GROUP_TIMEOUT, || {
            self.current_master() == Some(target)
                && info_field(target, &["INFO", "replication"], "role").as_deref() == Some("master")
        });
        if !done {
            let logs: Vec<String> = self
                .sentinels
                .iter()
                .map(|s| format!("sentinel {}:\n{}", s.port, s.log_tail()))
                .collect();
            return Err(start_err(
                "redis sentinel failover",
                format!(
                    "the replica on port {} was not promoted within {}s\n{}",
                    target.port(),
                    GROUP_TIMEOUT.as_secs(),
                    logs.join("\n")
                ),
            ));
        }
        Ok(Failover {
            took: start.elapsed(),
            new_master: target,
        })
    }
}

/// A Redis Cluster of the test's own: three masters (no replicas) on free ports of
/// `127.0.0.1`, each with its own cluster bus port, joined with `redis-cli --cluster create`,
/// every slot assigned. Every node is killed and its folder deleted on drop.
///
/// ```no_run
/// # fn demo() -> Result<(), unite_testkit::Error> {
/// use unite_testkit::RedisClusterGroup;
/// let cluster = RedisClusterGroup::start()?;
/// let url = cluster.url(); // redis-cluster://127.0.0.1:p1?node=127.0.0.1:p2&node=127.0.0.1:p3
/// # let _ = url; Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisClusterGroup {
    nodes: Vec<RedisServer>,
}

impl RedisClusterGroup {
    /// Starts three masters and creates the cluster; returns once every node says
    /// `cluster_state:ok` and knows the others (at most about 30 s).
    ///
    /// # Errors
    /// [`Error::Start`] naming what failed (`redis-cli --cluster create` output included).
    pub fn start() -> Result<Self, Error> {
        let mut nodes = Vec::with_capacity(3);
        for _ in 0..3 {
            nodes.push(RedisServer::start_with(RedisOptions::default().args([
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                "nodes.conf".to_owned(),
                "--cluster-node-timeout".to_owned(),
                "2000".to_owned(),
                "--cluster-port".to_owned(),
                free_port()?.to_string(),
            ]))?);
        }
        let group = Self { nodes };
        group.create()?;
        let n = group.nodes.len().to_string();
        let ready = wait_until(|| {
            group.nodes.iter().all(|node| {
                info_field(node.addr(), &["CLUSTER", "INFO"], "cluster_state").as_deref()
                    == Some("ok")
                    && info_field(node.addr(), &["CLUSTER", "INFO"], "cluster_known_nodes")
                        .as_deref()
                        == Some(n.as_str())
            })
        });
        if !ready {
            let logs: Vec<String> = group
                .nodes
                .iter()
                .map(|s| format!("node {}:\n{}", s.port(), s.log_tail()))
                .collect();
            return Err(start_err(
                "redis cluster",
                format!(
                    "cluster_state did not become ok within 30s\n{}",
                    logs.join("\n")
                ),
            ));
        }
        Ok(group)
    }

    fn create(&self) -> Result<(), Error> {
        let out_dir = tempfile::Builder::new()
            .prefix("unite-cluster-create-")
            .tempdir()?;
        let out_path = out_dir.path().join("out.txt");
        let out = std::fs::File::create(&out_path)?;
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for node in &self.nodes {
            cmd.arg(node.addr().to_string());
        }
        let mut child = cmd
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| start_err("redis cluster", format!("redis-cli: {e}")))?;
        let mut status = None;
        let finished = wait_until_for(GROUP_TIMEOUT, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if !finished {
            let _ = child.kill();
            let _ = child.wait();
        }
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(start_err(
                "redis cluster",
                format!("redis-cli --cluster create failed ({s}):\n{output}"),
            )),
            None => Err(start_err(
                "redis cluster",
                format!(
                    "redis-cli --cluster create did not finish within {}s:\n{output}",
                    GROUP_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    /// A fred URL for Cluster mode:
    /// `redis-cluster://127.0.0.1:<p1>?node=127.0.0.1:<p2>&node=127.0.0.1:<p3>`.
    #[must_use]
    pub fn url(&self) -> String {
        let mut ports = self.nodes.iter().map(RedisServer::port);
        let first = ports.next().unwrap_or_default();
        let rest: Vec<String> = ports.map(|p| format!("node=127.0.0.1:{p}")).collect();
        if rest.is_empty() {
            format!("redis-cluster://127.0.0.1:{first}")
        } else {
            format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
        }
    }

    /// The fred [`Config`] of [`url`](Self::url) (`ServerConfig::Clustered`).
    ///
    /// # Errors
    /// [`Error::Setup`] if fred refuses the URL (it should not).
    pub fn config(&self) -> Result<Config, Error> {
        Config::from_url(&self.url()).map_err(|e| Error::Setup {
            service: "Redis",
            reason: format!("fred refused the cluster URL: {e}"),
        })
    }

    /// The nodes' addresses.
    #[must_use]
    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// How many keys each node holds (`DBSIZE`), in the order of
    /// [`node_addrs`](Self::node_addrs); `None` for a node that did not answer.
    #[must_use]
    pub fn keys_per_node(&self) -> Vec<Option<i64>> {
        self.nodes
            .iter()
            .map(|n| match command(n.addr(), &["DBSIZE"]) {
                Ok(Reply::Int(k)) => Some(k),
                _ => None,
            })
            .collect()
    }
}

fn wait_until_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resp_replies() {
        let mut r = BufReader::new(&b"*3\r\n$3\r\nabc\r\n:7\r\n$-1\r\n+OK\r\n-ERR x\r\n"[..]);
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Array(vec![Reply::Text("abc".into()), Reply::Int(7), Reply::Nil])
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Text("OK".into()));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Error("ERR x".into()));
        assert!(read_reply(&mut r).is_err());
    }
}
