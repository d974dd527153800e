//! Webhook delivery (being written).

use tokio_util::sync::CancellationToken;

use crate::config::NotifySettings;
use crate::store::Store;

/// Delivers events to the configured webhook until `shutdown` is cancelled. Returns at once when no URL is set.
pub async fn run(store: Store, settings: NotifySettings, shutdown: CancellationToken) {
    let _ = (store, settings, shutdown);
}
