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
