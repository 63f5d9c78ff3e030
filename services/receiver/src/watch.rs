//! Live status: a change feed that follows the database (the processors that change
//! images may run anywhere) and fans changes out to `WatchImages` streams.
//!
//! One poller per receiver, running only while somebody watches, asks for rows updated
//! since a cursor. The cursor trails the newest change by an overlap window, so a writer
//! whose clock lags a little is not missed; rows already sent are recognised by their
//! `(id, updated_at)` and not sent twice.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use facewire_storage::{now_millis, ImageRecord, Store};
use tokio::sync::broadcast;

/// How far behind the newest change the cursor stays.
const OVERLAP_MILLIS: i64 = 2_000;
/// Most rows per poll.
const PAGE: i64 = 1_000;

/// Fans image changes out to subscribers.
#[derive(Clone)]
pub struct ChangeFeed {
    tx: broadcast::Sender<ImageRecord>,
    closed: facewire_server::CancellationToken,
    poller: Arc<Mutex<bool>>,
    store: Store,
    interval: Duration,
}

impl ChangeFeed {
    /// A feed over `store`, polling every `interval` while subscribed.
    pub fn new(store: Store, interval: Duration) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            tx,
            closed: facewire_server::CancellationToken::new(),
            poller: Arc::new(Mutex::new(false)),
            store,
            interval,
        }
    }

    /// Ends every watch stream (the server is shutting down: open streams would
    /// otherwise hold graceful shutdown forever).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Cancelled when the feed is closed.
    pub fn closed(&self) -> facewire_server::CancellationToken {
        self.closed.clone()
    }

    /// Subscribes to every change from now on, starting the poller if needed.
    pub fn subscribe(&self) -> broadcast::Receiver<ImageRecord> {
        let rx = self.tx.subscribe();
        let mut running = self.poller.lock().unwrap_or_else(|p| p.into_inner());
        if !*running {
            *running = true;
            tokio::spawn(self.clone().poll());
        }
        rx
    }

    async fn poll(self) {
        let mut cursor = now_millis() - OVERLAP_MILLIS;
        // What was last sent per image: a claim and a finish may share a millisecond, so
        // the status and attempt are part of the signature, not just the time.
        let mut sent: HashMap<i64, (i64, &'static str, i32)> = HashMap::new();
        loop {
            tokio::time::sleep(self.interval).await;
            {
                let mut running = self.poller.lock().unwrap_or_else(|p| p.into_inner());
                if self.tx.receiver_count() == 0 {
                    *running = false;
                    return;
                }
            }
            let rows = match self.store.changed_since(cursor, PAGE).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "change feed poll failed");
                    continue;
                }
            };
            let newest = rows.last().map(|r| r.updated_at);
            for row in rows {
                let signature = (row.updated_at, row.status.as_str(), row.attempts);
                if sent.get(&row.id) == Some(&signature) {
                    continue;
                }
                sent.insert(row.id, signature);
                let _ = self.tx.send(row);
            }
            if let Some(newest) = newest {
                cursor = cursor.max(newest - OVERLAP_MILLIS);
            }
            sent.retain(|_, (updated, _, _)| *updated >= cursor);
        }
    }
}
