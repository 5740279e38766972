use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a [`FaultProxy`] does with traffic. It can be switched at any time; the new mode
/// applies to connections already open as well as to new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Forward bytes both ways as they come.
    Pass,
    /// Hold every chunk for the given time before forwarding it, in both directions
    /// (a request/response round trip takes at least twice this).
    Delay(Duration),
    /// Accept connections and never answer: bytes are held, not forwarded, until the mode
    /// changes (then they are delivered, like a network partition that heals).
    Blackhole,
    /// Reset every open connection (TCP RST) and every new one as soon as it is accepted.
    Reset,
    /// Close the listening socket, so new connections are refused, and close open ones:
    /// as if the server process had gone away.
    Refuse,
}

/// A TCP proxy on `127.0.0.1` in front of a real server, for breaker, fallback and timeout
/// tests. It stops (and drops every connection) when dropped.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use unite_testkit::{FaultProxy, Mode};
/// let proxy = FaultProxy::start("127.0.0.1:6379".parse().unwrap()).await?;
/// let url = format!("redis://{}", proxy.addr()); // talk to Redis through the proxy
/// proxy.set_mode(Mode::Blackhole);                // ... and now it never answers
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in [`Mode::Pass`] on a free port of `127.0.0.1`, forwarding to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(listener, addr, target, rx, Arc::clone(&accepted)));
        Ok(Self {
            addr,
            target,
            mode,
            accepted,
            task,
        })
    }

    /// Starts a proxy in front of the host and port of `url` (`scheme://[user@]host:port/...`).
    pub async fn start_for_url(url: &str) -> io::Result<Self> {
        let target = host_port(url)
            .and_then(|hp| {
                use std::net::ToSocketAddrs;
                hp.to_socket_addrs().ok()?.next()
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("no host:port in {}", crate::redact_url(url)),
                )
            })?;
        Self::start(target).await
    }

    /// `url` with its host and port replaced by this proxy's.
    #[must_use]
    pub fn proxied_url(&self, url: &str) -> String {
        match host_port(url) {
            Some(hp) => url.replacen(&hp, &self.addr.to_string(), 1),
            None => url.to_owned(),
        }
    }

    /// The address clients connect to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server behind the proxy.
    #[must_use]
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches the mode; open connections follow at once.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    #[must_use]
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// How many connections the proxy has accepted so far.
    #[must_use]
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Dropping the sender wakes every connection task, which then resets its connection.
    }
}

/// The `host:port` part of a URL's authority.
fn host_port(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = &authority[authority.rfind('@').map_or(0, |i| i + 1)..];
    (!host_port.is_empty()).then(|| host_port.to_owned())
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn run(
    listener: TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    accepted: Arc<AtomicU64>,
) {
    let mut listener = Some(listener);
    loop {
        let Some(current) = listener.as_ref() else {
            // Refusing: wait for another mode, then listen again on the same port.
            if mode.changed().await.is_err() {
                return;
            }
            if *mode.borrow_and_update() != Mode::Refuse {
                match bind(addr) {
                    Ok(l) => listener = Some(l),
                    Err(e) => {
                        tracing::error!(%addr, error = %e, "fault proxy could not listen again");
                        return;
                    }
                }
            }
            continue;
        };
        tokio::select! {
            conn = current.accept() => {
                if let Ok((client, _)) = conn {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve(client, target, mode.clone()));
                }
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                if *mode.borrow_and_update() == Mode::Refuse {
                    listener = None;
                }
            }
        }
    }
}

/// Waits until the mode lets traffic through; `false` when the connection must be killed.
async fn wait_for_traffic(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Pass | Mode::Delay(_) => return true,
            Mode::Reset | Mode::Refuse => return false,
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Resolves when the mode asks for open connections to be killed (or the proxy is gone).
async fn kill_switch(mut mode: watch::Receiver<Mode>) {
    loop {
        if matches!(*mode.borrow_and_update(), Mode::Reset | Mode::Refuse) {
            return;
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
}

async fn serve(mut client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let _ = client.set_nodelay(true);
    // Blackhole holds a new connection here; Reset and Refuse end it.
    let upstream = if wait_for_traffic(&mut mode).await {
        TcpStream::connect(target).await.ok()
    } else {
        None
    };
    let Some(mut upstream) = upstream else {
        reset(&client);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let killed = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        let both = async {
            tokio::join!(
                pump(&mut cr, &mut uw, mode.clone()),
                pump(&mut ur, &mut cw, mode.clone())
            )
        };
        tokio::select! {
            _ = both => false,
            () = kill_switch(mode.clone()) => true,
        }
    };
    if killed {
        reset(&client);
        reset(&upstream);
    }
}

/// Makes the close of `stream` (when it is dropped) a TCP reset rather than an orderly FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn pump<R, W>(reader: &mut R, writer: &mut W, mut mode: watch::Receiver<Mode>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = writer.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if !wait_for_traffic(&mut mode).await {
            return;
        }
        let current = *mode.borrow();
        if let Mode::Delay(d) = current {
            tokio::time::sleep(d).await;
        }
        if writer.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn finds_host_and_port() {
        assert_eq!(
            host_port("postgres://u:p@127.0.0.1:5432/db?x=1").as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(
            host_port("redis://127.0.0.1:6379").as_deref(),
            Some("127.0.0.1:6379")
        );
        assert_eq!(host_port("nonsense"), None);
    }
}
