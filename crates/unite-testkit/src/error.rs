use std::io;

/// What went wrong while preparing a test's backing service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server named by the URL did not answer.
    #[error(
        "{service} at {url} did not answer: {reason}\n\
         Start the local services with `{hint}` (it installs and starts Postgres and Redis on \
         loopback when nothing answers), or set {env_var} to a running server.",
        hint = crate::START_SERVICES_HINT
    )]
    Unreachable {
        /// `Postgres` or `Redis`.
        service: &'static str,
        /// The URL that was tried, password hidden.
        url: String,
        /// The environment variable that names the server.
        env_var: &'static str,
        /// Why the connection failed.
        reason: String,
    },
    /// A server answered but a set-up step failed.
    #[error("{service} set-up failed: {reason}")]
    Setup {
        /// `Postgres` or `Redis`.
        service: &'static str,
        /// What failed.
        reason: String,
    },
    /// A throwaway local server could not be started.
    #[error("could not start a local {what}: {reason}")]
    Start {
        /// Which server.
        what: &'static str,
        /// What failed, with the server's log tail when there is one.
        reason: String,
    },
    /// An I/O error (binding a port, writing a file).
    #[error(transparent)]
    Io(#[from] io::Error),
}
