//! Live status: a change feed that follows the database (the processors that change
//! images may run anywhere) and fans changes out to `WatchImages` streams.
//!
//! One poller per receiver, running only while somebody watches, asks for rows updated
//! since a cursor. The cursor trails the newest change by an overlap window, so a writer
//! whose clock lags a little is not missed; rows already sent are recognised by their
//! `(id, updated_at)` and not sent twice.
//!
//! A `WatchImages` stream is resumable: every event carries a [`Cursor`], the stream's
//! high-water mark in `(updated_at, id)` order. A client that reconnects with it is
//! served by a [`Watcher`] that subscribes to the feed first, then replays from the
//! database every image changed after the cursor, then goes on live, dropping the live
//! events the replay (or the earlier stream) already delivered: no gap at the seam, and
//! no duplicate.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use facewire_storage::{now_millis, ImageRecord, ImageStatus, Store, StoreError};
use tokio::sync::{broadcast, broadcast::error::RecvError};

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
            // Page through everything changed since the cursor in this one poll: more
            // than a page of changes inside the overlap window would otherwise return
            // the same first page on every poll, and the feed would never move on.
            let mut newest = None;
            let mut page = self.store.changed_since(cursor, PAGE).await;
            loop {
                let rows = match page {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed poll failed");
                        break;
                    }
                };
                let full = rows.len() as i64 == PAGE;
                let last = rows.last().map(|r| (r.updated_at, r.id));
                for row in rows {
                    let signature = (row.updated_at, row.status.as_str(), row.attempts);
                    if sent.get(&row.id) == Some(&signature) {
                        continue;
                    }
                    sent.insert(row.id, signature);
                    let _ = self.tx.send(row);
                }
                let Some((updated_at, id)) = last else { break };
                newest = Some(updated_at);
                if !full {
                    break;
                }
                page = self.store.changed_after(updated_at, id, None, PAGE).await;
            }
            if let Some(newest) = newest {
                cursor = cursor.max(newest - OVERLAP_MILLIS);
            }
            sent.retain(|_, (updated, _, _)| *updated >= cursor);
        }
    }
}

/// A position in the change feed: the `(updated_at, id)` of an image change, and the
/// state the image had there. Changes are replayed in `(updated_at, id)` order; the
/// state tells a second change to the same image within the same millisecond (a quick
/// claim and finish) from the one the client already has. The wire form is opaque
/// (`v1.<updated_at>.<id>.<attempts>.<status>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The change's `updated_at`, milliseconds since the epoch.
    pub updated_at: i64,
    /// The image's id (orders changes within one millisecond).
    pub id: i64,
    /// The image's attempts at this position.
    pub attempts: i32,
    /// The image's status at this position (`None`: a position between changes).
    pub status: Option<ImageStatus>,
}

/// A cursor string this server did not issue.
#[derive(Debug, thiserror::Error)]
#[error("cursor is not one this server issued (pass the cursor of a WatchImages event, or none)")]
pub struct BadCursor;

impl Cursor {
    /// The feed position of `record`'s current state.
    pub fn of(record: &ImageRecord) -> Self {
        Self {
            updated_at: record.updated_at,
            id: record.id,
            attempts: record.attempts,
            status: Some(record.status),
        }
    }

    /// The position just before every change made at `updated_at` or later.
    pub fn before(updated_at: i64) -> Self {
        Self {
            updated_at,
            id: 0,
            attempts: 0,
            status: None,
        }
    }

    /// The position in replay order.
    pub fn key(&self) -> (i64, i64) {
        (self.updated_at, self.id)
    }

    /// Whether a client at this position has seen `record`'s state: an earlier change,
    /// or this very one.
    pub fn covers(&self, record: &ImageRecord) -> bool {
        let at = (record.updated_at, record.id);
        at < self.key() || *self == Self::of(record)
    }

    /// The wire form.
    pub fn encode(&self) -> String {
        let status = self.status.map(ImageStatus::as_str).unwrap_or("-");
        format!(
            "v1.{}.{}.{}.{status}",
            self.updated_at, self.id, self.attempts
        )
    }

    /// Parses the wire form.
    pub fn parse(s: &str) -> Result<Self, BadCursor> {
        let mut parts = s.strip_prefix("v1.").ok_or(BadCursor)?.split('.');
        let mut number = || -> Result<i64, BadCursor> {
            let n: i64 = parts
                .next()
                .ok_or(BadCursor)?
                .parse()
                .map_err(|_| BadCursor)?;
            if n < 0 {
                return Err(BadCursor);
            }
            Ok(n)
        };
        let updated_at = number()?;
        let id = number()?;
        let attempts = i32::try_from(number()?).map_err(|_| BadCursor)?;
        let status = match parts.next().ok_or(BadCursor)? {
            "-" => None,
            name => Some(name.parse::<ImageStatus>().map_err(|_| BadCursor)?),
        };
        if parts.next().is_some() {
            return Err(BadCursor);
        }
        Ok(Self {
            updated_at,
            id,
            attempts,
            status,
        })
    }
}

/// What identifies one state of an image: a claim and a finish may share a millisecond.
type Signature = (i64, &'static str, i32);

fn signature(r: &ImageRecord) -> Signature {
    (r.updated_at, r.status.as_str(), r.attempts)
}

/// Serves one `WatchImages` stream: the initial records, the replay after a resume
/// cursor, then live changes, each stamped with the stream's cursor.
pub struct Watcher {
    store: Store,
    changes: broadcast::Receiver<ImageRecord>,
    /// The watched ids still not terminal (`None`: every image).
    open: Option<HashSet<i64>>,
    /// The cursor the client resumed from: it has seen everything up to here.
    resumed_from: Option<Cursor>,
    /// The highest position delivered so far.
    high_water: Cursor,
    /// The newest state of each image sent by a replay, to drop its live echo.
    replayed: HashMap<i64, Signature>,
}

impl Watcher {
    /// A watcher over `changes` (subscribe before reading anything from the store, so no
    /// change falls in between), for `open` ids (`None`: all), resuming after `resume`.
    pub fn new(
        store: Store,
        changes: broadcast::Receiver<ImageRecord>,
        open: Option<HashSet<i64>>,
        resume: Option<Cursor>,
    ) -> Self {
        Self {
            store,
            changes,
            open,
            resumed_from: resume,
            // A fresh stream starts where the live feed does: a little before now.
            high_water: resume.unwrap_or(Cursor::before(now_millis() - OVERLAP_MILLIS)),
            replayed: HashMap::new(),
        }
    }

    /// Runs the stream: `initial` records first, then (when resuming) every change after
    /// the cursor from the database, then live changes until every watched image is
    /// terminal, `closed` fires, or `send` reports the client gone. `send` gets each
    /// record with the cursor to resume after it.
    pub async fn run<F, Fut>(
        mut self,
        initial: Vec<ImageRecord>,
        closed: facewire_server::CancellationToken,
        mut send: F,
    ) where
        F: FnMut(ImageRecord, Cursor) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for r in initial {
            if !self.deliver(r, &mut send).await {
                return;
            }
        }
        if let Some(after) = self.resumed_from {
            match self.replay(after, &mut send).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "watch replay failed; ending the stream");
                    return;
                }
            }
        }
        loop {
            if self.open.as_ref().is_some_and(|o| o.is_empty()) {
                return; // every watched image is terminal
            }
            let next = tokio::select! {
                _ = closed.cancelled() => return,
                r = self.changes.recv() => r,
            };
            let record = match next {
                Ok(r) => r,
                Err(RecvError::Lagged(n)) => {
                    // Changes were dropped for this slow watcher: read them again from
                    // the database, from the last position delivered.
                    tracing::warn!(skipped = n, "watcher lagged; replaying from its cursor");
                    let after = self.high_water;
                    match self.replay(after, &mut send).await {
                        Ok(true) => continue,
                        Ok(false) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "watch replay failed; ending the stream");
                            return;
                        }
                    }
                }
                Err(RecvError::Closed) => return,
            };
            if !self.is_new(&record) {
                continue;
            }
            if !self.deliver(record, &mut send).await {
                return;
            }
        }
    }

    /// Whether a live `record` is news to this client: watched, not delivered by the
    /// replay, and not before the cursor it resumed from.
    fn is_new(&self, record: &ImageRecord) -> bool {
        if let Some(open) = &self.open {
            if !open.contains(&record.id) {
                return false;
            }
        }
        if self.resumed_from.is_some_and(|after| after.covers(record)) {
            return false;
        }
        match self.replayed.get(&record.id) {
            Some(sent) => {
                // Newer than the replayed state, or the same millisecond but a different
                // state (claimed and finished within one millisecond).
                record.updated_at > sent.0
                    || (record.updated_at == sent.0 && signature(record) != *sent)
            }
            None => true,
        }
    }

    /// Sends every watched image changed after `after`, page by page, and remembers what
    /// was sent. `Ok(false)`: the client is gone.
    async fn replay<F, Fut>(&mut self, after: Cursor, send: &mut F) -> Result<bool, StoreError>
    where
        F: FnMut(ImageRecord, Cursor) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let ids: Option<Vec<i64>> = self.open.as_ref().map(|o| o.iter().copied().collect());
        if ids.as_ref().is_some_and(|ids| ids.is_empty()) {
            return Ok(true);
        }
        // From the cursor's own row on: it may have changed again within the millisecond.
        let mut position = (after.updated_at, after.id - 1);
        loop {
            let rows = self
                .store
                .changed_after(position.0, position.1, ids.clone(), PAGE)
                .await?;
            let full = rows.len() as i64 == PAGE;
            for r in rows {
                position = (r.updated_at, r.id);
                if after.covers(&r) {
                    continue;
                }
                self.replayed.insert(r.id, signature(&r));
                if !self.deliver(r, send).await {
                    return Ok(false);
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }

    /// Sends `record` with the stream's cursor after it.
    async fn deliver<F, Fut>(&mut self, record: ImageRecord, send: &mut F) -> bool
    where
        F: FnMut(ImageRecord, Cursor) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        if record.status.is_terminal() {
            if let Some(open) = self.open.as_mut() {
                open.remove(&record.id);
            }
        }
        // A later state at the same position (same millisecond) moves the cursor too.
        let at = Cursor::of(&record);
        if at.key() >= self.high_water.key() {
            self.high_water = at;
        }
        let cursor = self.high_water;
        send(record, cursor).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            updated_at: 1_700_000_000_123,
            id: 42,
            attempts: 2,
            status: Some(ImageStatus::NoFace),
        };
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        let start = Cursor::before(1_700_000_000_000);
        assert_eq!(Cursor::parse(&start.encode()).unwrap(), start);
        assert!(start.key() < c.key());
        for bad in [
            "",
            "42",
            "v1.",
            "v1.12.3",
            "v1.a.b.0.done",
            "v1.-1.2.0.done",
            "v2.1.2.0.done",
            "v1.1.2.0.sleeping",
            "v1.1.2.0.done.7",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
