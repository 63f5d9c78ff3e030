//! facewire's database layer.
//!
//! One [`Store`] over diesel, backed by SQLite (the embedded default, a file in the data
//! dir) or PostgreSQL (production), chosen by the URL. Migrations are embedded and run
//! when the store opens. Diesel is synchronous, so every query runs on tokio's blocking
//! pool with a pooled connection.
//!
//! The database is the truth of the pipeline: an image row carries its state, attempts,
//! last error and timestamps, and every state change is a conditional UPDATE, so a
//! repeated transition (a redelivered message, a second "done") changes nothing.

use std::time::Duration;

use diesel::{
    connection::SimpleConnection,
    r2d2::{ConnectionManager, CustomizeConnection, Pool},
    PgConnection, SqliteConnection,
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend the store
/// has. The body is compiled once per backend, so one query text serves both.
macro_rules! with_conn {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let store = $store.clone();
        $crate::run_blocking(move || match &store.backend {
            $crate::Backend::Pg(pool) => {
                let mut pooled = pool.get()?;
                let $conn = &mut *pooled;
                $body
            }
            $crate::Backend::Sqlite(pool) => {
                let mut pooled = pool.get()?;
                let $conn = &mut *pooled;
                $body
            }
        })
        .await
    }};
}

pub mod faces;
pub mod gallery;
pub mod grouping;
pub mod images;
pub mod jobs;
pub mod names;
pub mod people;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

pub use faces::{Assigned, DetectedFace, EditError, FaceRecord, FaceScope, FaceSource, ImageFace};
pub use images::{ImageFilter, ImageRecord, ImageStatus, NewImage, Outcome, PersonFound, Requeue};
pub use jobs::{Job, JobKind, JobScope, JobState};
pub use people::{PersonFilter, PersonRecord, PersonUpdate};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Errors at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no backend we speak.
    #[error("unsupported database URL {0:?}: expected postgres://, postgresql:// or sqlite://")]
    UnsupportedUrl(String),
    /// The database cannot be reached (down, refused, pool exhausted).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Running the embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A stored value could not be understood.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// The backend-specific connection pool.
#[derive(Clone)]
pub(crate) enum Backend {
    Pg(Pool<ConnectionManager<PgConnection>>),
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// Runs a blocking database closure on tokio's blocking pool. Its error is any type a
/// [`StoreError`] converts into (the storage error itself, or an edit's error).
pub(crate) async fn run_blocking<T, E, F>(f: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        E::from(StoreError::Unavailable(format!(
            "database task failed: {e}"
        )))
    })?
}

/// SQLite settings every pooled connection needs: WAL so readers never block the
/// writer, a busy timeout so concurrent writers wait instead of failing, and foreign keys.
#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(
            "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most pooled connections.
    pub max_connections: u32,
    /// How long to wait for a connection before reporting the database unavailable.
    pub connect_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Store {
    /// Opens the database named by `url` and runs pending migrations.
    ///
    /// `postgres://` / `postgresql://` URLs select PostgreSQL; `sqlite://PATH` (or a bare
    /// file path ending in `.db`/`.sqlite`) selects SQLite, creating the file if needed.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let store = Self::connect(url, &options)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Builds the pool without touching the database; connections are made lazily.
    pub fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = Pool::builder()
                .max_size(options.max_connections)
                .min_idle(Some(0))
                .connection_timeout(options.connect_timeout)
                .test_on_check_out(true)
                .build_unchecked(ConnectionManager::<PgConnection>::new(url));
            Backend::Pg(pool)
        } else if let Some(path) = sqlite_path(url) {
            if let Some(parent) = std::path::Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
            }
            let pool = Pool::builder()
                .max_size(options.max_connections.min(8))
                .min_idle(Some(1))
                .connection_timeout(options.connect_timeout)
                .connection_customizer(Box::new(SqlitePragmas))
                .build_unchecked(ConnectionManager::<SqliteConnection>::new(path));
            Backend::Sqlite(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        Ok(Store { backend })
    }

    /// Runs pending migrations (idempotent; safe when several replicas start at once on
    /// PostgreSQL because diesel applies each migration in a transaction).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        with_conn!(self, |conn| run_migrations(conn))
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Pg(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Checks that the database answers (for readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            conn.batch_execute("SELECT 1")?;
            Ok(())
        })
    }
}

trait Migrate {
    fn migrations() -> EmbeddedMigrations;
}
impl Migrate for PgConnection {
    fn migrations() -> EmbeddedMigrations {
        PG_MIGRATIONS
    }
}
impl Migrate for SqliteConnection {
    fn migrations() -> EmbeddedMigrations {
        SQLITE_MIGRATIONS
    }
}

fn run_migrations<C>(conn: &mut C) -> Result<(), StoreError>
where
    C: MigrationHarness<C::Backend> + Migrate + diesel::Connection,
{
    conn.run_pending_migrations(C::migrations())
        .map(|applied| {
            if !applied.is_empty() {
                tracing::info!(count = applied.len(), "applied database migrations");
            }
        })
        .map_err(|e| StoreError::Migration(e.to_string()))
}

/// Milliseconds since the Unix epoch, the timestamp unit of every table.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn sqlite_path(url: &str) -> Option<&str> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        return Some(rest);
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        return Some(rest);
    }
    if url.ends_with(".db") || url.ends_with(".sqlite") || url.ends_with(".sqlite3") {
        return Some(url);
    }
    None
}

/// The URL without its password, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_backend_by_url() {
        let opts = StoreOptions::default();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/x.db", dir.path().display());
        assert_eq!(
            Store::connect(&url, &opts).unwrap().backend_name(),
            "sqlite"
        );
        let pg = Store::connect("postgres://u@127.0.0.1:1/db", &opts).unwrap();
        assert_eq!(pg.backend_name(), "postgres");
        assert!(matches!(
            Store::connect("mysql://x", &opts),
            Err(StoreError::UnsupportedUrl(_))
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/facewire"),
            "postgres://app:***@db:5432/facewire"
        );
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
