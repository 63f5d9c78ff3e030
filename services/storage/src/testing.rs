//! Test support: a fresh PostgreSQL database per test run, dropped afterwards.

use diesel::{pg::PgConnection, Connection, RunQueryDsl};

/// The server tests use: `FACEWIRE_TEST_DATABASE_URL` (an admin URL, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`) or that default.
pub fn admin_url() -> String {
    std::env::var("FACEWIRE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A PostgreSQL database that exists for the life of this value.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of the fresh database.
    pub url: String,
    name: String,
    admin: String,
}

impl TestDatabase {
    /// Creates `facewire_test_<uuid>` on the test server.
    ///
    /// # Panics
    /// When the server is unreachable: tests need the real database.
    pub fn create() -> Self {
        let admin = admin_url();
        let name = format!("facewire_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::establish(&admin)
            .unwrap_or_else(|e| panic!("test PostgreSQL at {admin} unreachable: {e}"));
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .expect("CREATE DATABASE");
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Self {
            url: format!("{base}/{name}"),
            name,
            admin,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.admin) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

/// How many migrations the release before faces-as-records shipped (2026-11-25-*).
pub const PREVIOUS_RELEASE_MIGRATIONS: usize = 4;

/// Brings a fresh database at `url` to the schema of the previous release (its first
/// `PREVIOUS_RELEASE_MIGRATIONS` migrations) and runs `sql` on it, to write rows as that
/// release did. Upgrade tests then open it with [`crate::Store::open`].
pub fn previous_release_database(url: &str, sql: &str) {
    use diesel::{connection::SimpleConnection, SqliteConnection};
    use diesel_migrations::MigrationHarness;
    fn apply<C>(conn: &mut C, sql: &str)
    where
        C: MigrationHarness<C::Backend> + diesel::Connection + SimpleConnection + crate::Migrate,
    {
        for _ in 0..PREVIOUS_RELEASE_MIGRATIONS {
            conn.run_next_migration(C::migrations())
                .expect("previous release migration");
        }
        conn.batch_execute(sql).expect("previous release rows");
    }
    if url.starts_with("postgres") {
        let mut conn = PgConnection::establish(url).expect("connect");
        apply(&mut conn, sql);
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let mut conn = SqliteConnection::establish(path).expect("open");
        apply(&mut conn, sql);
    }
}

/// Defines a test module `$name` that runs the async `$scenario(store)` once against a
/// temp-file SQLite and once against a fresh PostgreSQL database. The calling crate
/// needs `tempfile` and `tokio` (test) dependencies.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $scenario:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/facewire.db", dir.path().display());
                let store = $crate::Store::open(&url, $crate::StoreOptions::default())
                    .await
                    .unwrap();
                $scenario(store).await;
            }
            #[tokio::test]
            async fn postgres() {
                let db = $crate::testing::TestDatabase::create();
                let store = $crate::Store::open(&db.url, $crate::StoreOptions::default())
                    .await
                    .unwrap();
                $scenario(store).await;
            }
        }
    };
}

/// Records `new` images and returns their ids, in order.
pub async fn insert_ids(store: &crate::Store, new: Vec<crate::NewImage>) -> Vec<i64> {
    let records = store.insert_batch(new).await.expect("insert the images");
    records.iter().map(|r| r.id).collect()
}

/// `n` new images with paths and hashes no other call of this process uses.
pub fn new_images(n: usize) -> Vec<crate::NewImage> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = crate::now_millis();
    (0..n)
        .map(|i| crate::NewImage {
            path: format!("{tag}-{call}/{i}.jpg"),
            content_hash: format!("{tag:024x}{call:08x}{i:032x}"),
        })
        .collect()
}

/// Claims `ids` and finishes the `i`-th with `outcome(i)`, through the processor's write
/// path (one transaction).
pub async fn process(store: &crate::Store, ids: &[i64], outcome: impl Fn(usize) -> crate::Outcome) {
    let claims = store.claim(ids.to_vec()).await.expect("claim the images");
    assert_eq!(claims.len(), ids.len(), "every image claimed");
    let position = |id: i64| ids.iter().position(|&x| x == id).unwrap_or_default();
    let outcomes = claims
        .into_iter()
        .map(|c| {
            let i = position(c.id);
            (c, outcome(i))
        })
        .collect();
    store.finish(outcomes).await.expect("finish the images");
}
