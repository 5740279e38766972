//! The tower middleware: [`RateLimitLayer`] and [`RateLimitService`].

mod future;
mod layer;
mod response;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::RateLimitLayer;
pub use self::response::{apply_headers, too_many_requests_body};
pub use self::service::RateLimitService;
