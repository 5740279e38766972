//! Invalidation across instances: messages on a Redis channel, applied to L1.

use std::sync::Weak;

use fred::clients::SubscriberClient;
use fred::interfaces::{EventInterface, PubsubInterface};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::cache::Inner;

/// `{"i": "<instance id>", "k": ["key", ...]}` on `<namespace>__invalidate`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Message<'a> {
    #[serde(borrow, rename = "i")]
    pub(crate) instance: &'a str,
    #[serde(borrow, rename = "k")]
    pub(crate) keys: Vec<&'a str>,
}

pub(crate) fn encode(instance: &str, keys: Vec<&str>) -> String {
    // Serializing strings into JSON cannot fail.
    serde_json::to_string(&Message { instance, keys }).unwrap_or_default()
}

/// Subscribes (again after every reconnect), applies messages, and clears L1 whenever
/// messages may have been missed. Ends when the cache is dropped.
pub(crate) async fn run(
    cache: Weak<Inner>,
    subscriber: SubscriberClient,
    channel: String,
    subscribed: watch::Sender<bool>,
    retry: std::time::Duration,
) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let mut need_subscribe = true;
    loop {
        if need_subscribe {
            match tokio::time::timeout(retry, subscriber.subscribe(channel.as_str())).await {
                Ok(Ok(())) => {
                    need_subscribe = false;
                    subscribed.send_replace(true);
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "cache invalidation subscribe failed"),
                Err(_) => tracing::debug!("cache invalidation subscribe timed out"),
            }
        }
        tokio::select! {
            msg = messages.recv() => match msg {
                Ok(msg) => {
                    let Some(cache) = cache.upgrade() else { return };
                    if let Some(bytes) = msg.value.as_bytes() {
                        cache.apply_invalidation(bytes).await;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let Some(cache) = cache.upgrade() else { return };
                    cache.resync("invalidation messages were dropped");
                }
                Err(RecvError::Closed) => return,
            },
            event = reconnects.recv() => match event {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    subscribed.send_replace(false);
                    need_subscribe = true;
                    // Messages sent while this connection was down are lost: L1 may hold
                    // entries written elsewhere since. (The first connection clears an L1
                    // that is usually still empty.)
                    let Some(cache) = cache.upgrade() else { return };
                    cache.resync("the invalidation subscriber (re)connected");
                }
                Err(RecvError::Closed) => return,
            },
            () = tokio::time::sleep(retry), if need_subscribe => {}
        }
    }
}
