//! `unite-hub serve`: migrate, serve at once, warm in the background, shut down gracefully.

use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::Config;
use crate::state::AppState;

/// Builds the state and runs migrations (what `serve`, `seed` and `warm` share).
pub async fn prepare(
    config: Config,
    metrics: Option<unite_telemetry::MetricsHandle>,
) -> anyhow::Result<AppState> {
    let state = AppState::build(config, metrics).await?;
    let mut conn = state
        .pool
        .get()
        .await
        .context("checking out a connection for migrations")?;
    let applied = crate::migrate::run(&mut conn)
        .await
        .context("running migrations")?;
    if applied > 0 {
        tracing::info!(applied, "migrations done");
    }
    Ok(state)
}

/// Serves until SIGTERM or SIGINT, then drains for at most `SHUTDOWN_GRACE`.
pub async fn serve(state: AppState) -> anyhow::Result<()> {
    let listener = TcpListener::bind(state.config.bind_addr)
        .await
        .with_context(|| format!("binding BIND_ADDR={}", state.config.bind_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        url = %format!("http://{addr}"),
        try_it = %format!("curl -s http://{addr}/api/health"),
        "unite-hub listening"
    );
    run(listener, state, shutdown_signal()).await
}

/// Serves on `listener` until `stop` resolves; the testable core of [`serve`].
///
/// Connections are HTTP/1.1 through hyper, with `HEADER_READ_TIMEOUT` on every request head
/// (from the connection's start, and between keep-alive requests): a client that trickles its
/// headers (slowloris) or connects and stays silent is disconnected instead of holding a task
/// and a socket for ever.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let background = spawn_background(&state, shutdown.clone());
    if state.config.warm_on_start {
        crate::tools::start_warm(&state);
    }
    let router = crate::app(state.clone());

    let signal = shutdown.clone();
    tokio::spawn(async move {
        stop.await;
        tracing::info!("shutdown requested: no new connections, draining");
        signal.cancel();
    });

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout);
    let connections = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    // What `into_make_service_with_connect_info` would add: the rate limiter's peer.
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.map(axum::body::Body::new)
                });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Header read timeouts, resets and malformed requests end here.
                tracing::debug!(error = %e, %peer, "connection closed with an error");
            }
        });
    }
    drop(listener);

    let grace = state.config.shutdown_grace;
    let drained = tokio::time::timeout(grace, connections.shutdown())
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "drain took longer than SHUTDOWN_GRACE; closing"
        );
    }
    crate::tools::cancel_warm(&state);
    background.abort();
    if let Err(e) = crate::tools::save_hotkeys(&state).await {
        tracing::warn!(error = %e, "could not save the hot-key list");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The hot-key detector's tick (alerts) and the periodic save of the hot-key list.
fn spawn_background(state: &AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            for event in state.hotkeys.tick() {
                tracing::warn!(event = ?event, "hot key");
            }
            n += 1;
            if n.is_multiple_of(60)
                && let Err(e) = crate::tools::save_hotkeys(&state).await
            {
                tracing::debug!(error = %e, "hot-key list not saved");
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
