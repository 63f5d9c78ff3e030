//! Helpers for tests that need a real RabbitMQ (feature `testing`).
//!
//! Tests share one broker, so each must work in its own namespace: either a queue with
//! a unique name ([`TestQueue`], cheap) on the test URL's vhost, deleted when dropped,
//! or a throwaway vhost ([`TestVhost`], about a second to make) that takes everything
//! in it along when dropped.

use std::process::Command;

use lapin::{
    options::{ExchangeDeleteOptions, QueueDeleteOptions},
    Connection, ConnectionProperties,
};

/// Environment variable naming the broker tests use.
pub const AMQP_URL_ENV: &str = "FACEWIRE_TEST_AMQP_URL";

/// The broker used when [`AMQP_URL_ENV`] is not set: the local RabbitMQ, default vhost.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker URL for tests: `$FACEWIRE_TEST_AMQP_URL`, or [`DEFAULT_AMQP_URL`].
pub fn amqp_url() -> String {
    std::env::var(AMQP_URL_ENV).unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string())
}

/// `<prefix>-<uuid>`: a queue (or vhost) name no other test run uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// A unique queue name on the test broker whose queues and exchange (see
/// [`crate::rabbitmq`]) are deleted on drop, even when the test panics.
#[derive(Debug)]
pub struct TestQueue {
    url: String,
    name: String,
}

impl TestQueue {
    /// A fresh name `<prefix>-<uuid>` on [`amqp_url`]. Nothing is declared until a
    /// [`crate::RabbitQueue`] for it is used.
    pub fn new(prefix: &str) -> Self {
        Self::on(&amqp_url(), prefix)
    }

    /// A fresh name on the broker (and vhost) at `url`.
    pub fn on(url: &str, prefix: &str) -> Self {
        Self {
            url: url.to_string(),
            name: unique_name(prefix),
        }
    }

    /// The broker URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The work queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop cannot await, and may run inside a runtime (which must not be blocked
        // on): delete from a thread with a runtime of its own.
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(delete_topology(&url, &name))
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not delete test queue {}: {error}", self.name),
            Err(_) => eprintln!("deleting test queue {} panicked", self.name),
        }
    }
}

/// Deletes `<name>`, `<name>.dead` and `<name>.dlx`; missing ones are fine.
async fn delete_topology(url: &str, name: &str) -> Result<(), String> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let connection = Connection::connect(url, properties)
        .await
        .map_err(|e| e.to_string())?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    for queue in [name.to_string(), format!("{name}.dead")] {
        channel
            .queue_delete(&queue, QueueDeleteOptions::default())
            .await
            .map_err(|e| e.to_string())?;
    }
    channel
        .exchange_delete(&format!("{name}.dlx"), ExchangeDeleteOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let _ = connection.close(200, "test done").await;
    Ok(())
}

/// `url` with its vhost replaced by `vhost` (which must need no percent-encoding).
pub fn url_with_vhost(url: &str, vhost: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = before_query.split('/').next().unwrap_or_default();
    format!("{scheme}://{authority}/{vhost}{query}")
}

/// A RabbitMQ vhost made for one test and deleted (with everything in it) on drop.
///
/// Made with `rabbitmqctl`, so the broker must be on this machine and the test must be
/// allowed to run `rabbitmqctl` (root, or the rabbitmq user). The user of
/// [`amqp_url`] is given full permissions on it.
#[derive(Debug)]
pub struct TestVhost {
    name: String,
    url: String,
}

impl TestVhost {
    /// Creates `facewire-test-<uuid>` and grants the test URL's user access to it.
    /// Blocks for about a second (two `rabbitmqctl` calls).
    pub fn create() -> Result<Self, String> {
        let base = amqp_url();
        let name = unique_name("facewire-test");
        let user = user_of(&base);
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = Self {
            url: url_with_vhost(&base, &name),
            name,
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &user,
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(vhost)
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The AMQP URL of the vhost.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if let Err(error) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("could not delete test vhost {}: {error}", self.name);
        }
    }
}

/// The user named in `url`, `guest` if none.
fn user_of(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(userinfo, _)| userinfo.split(':').next().unwrap_or_default().to_string())
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "guest".to_string())
}

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_replaces_the_path_and_keeps_the_query() {
        assert_eq!(
            url_with_vhost("amqp://guest:guest@127.0.0.1:5672/%2f", "t-1"),
            "amqp://guest:guest@127.0.0.1:5672/t-1"
        );
        assert_eq!(
            url_with_vhost("amqp://127.0.0.1:5672?heartbeat=5", "t-1"),
            "amqp://127.0.0.1:5672/t-1?heartbeat=5"
        );
    }

    #[test]
    fn user_comes_from_the_url() {
        assert_eq!(user_of("amqp://alice:pw@host/%2f"), "alice");
        assert_eq!(user_of("amqp://host/%2f"), "guest");
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("q"), unique_name("q"));
        assert!(unique_name("q").starts_with("q-"));
    }
}
