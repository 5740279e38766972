//! `unite-hub`: the example service that wires every Unite crate into one axum service.
//!
//! The binary (`src/main.rs`) is only a command line over these modules; tests build the
//! router with [`app`] and drive it with `oneshot` or over a real socket.

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod migrate;
pub mod read_your_writes;
pub mod routes;
pub mod seed;
pub mod serve;
pub mod state;
pub mod tools;

pub use app::app;
pub use config::Config;
pub use state::AppState;
