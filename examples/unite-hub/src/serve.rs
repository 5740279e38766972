//! `unite-hub serve`: migrate, serve at once, warm in the background, shut down gracefully.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    let graceful = shutdown.clone();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { graceful.cancelled().await });

    let signal = shutdown.clone();
    tokio::spawn(async move {
        stop.await;
        tracing::info!("shutdown requested: no new connections, draining");
        signal.cancel();
    });

    let grace = state.config.shutdown_grace;
    let drained = tokio::select! {
        r = server => { r.context("serving")?; true }
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => false,
    };
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
