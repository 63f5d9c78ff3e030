//! A real browser for end-to-end tests of the web page: Debian's headless Chromium,
//! driven through chromedriver's W3C WebDriver HTTP API (installed by scripts/setup:
//! `chromium`, `chromium-driver`).
//!
//! Only what the tests need: open a page, run a script in it, wait for a condition,
//! take a screenshot.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// A headless Chromium session, closed (with its chromedriver) on drop.
pub struct Browser {
    driver: Child,
    driver_addr: SocketAddr,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

fn binary(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session with a
    /// fresh profile. `FACEWIRE_CHROMEDRIVER` / `FACEWIRE_CHROMIUM` override the paths.
    pub async fn launch() -> Self {
        let driver_bin = binary("FACEWIRE_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = binary("FACEWIRE_CHROMIUM", "/usr/bin/chromium");
        let port = free_port();
        let driver_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let verbose = std::env::var("FACEWIRE_TEST_LOG").is_ok();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(if verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(if verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("run {driver_bin} (install it with scripts/setup): {e}"));
        let http = reqwest::Client::new();
        let base = format!("http://{driver_addr}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("temp browser profile");
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            // Containers have a tiny /dev/shm; Chromium crashes tabs when it fills up.
            "--disable-dev-shm-usage".into(),
            "--no-proxy-server".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": chromium, "args": args }
                }
            }
        });
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .expect("WebDriver session JSON");
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {response}"))
            .to_string();
        Self {
            driver,
            driver_addr,
            http,
            session,
            _profile: profile,
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("http://{}/session/{}{tail}", self.driver_addr, self.session)
    }

    async fn call(&self, method: reqwest::Method, tail: &str, body: Value) -> Value {
        let mut request = self.http.request(method, self.url(tail));
        if !body.is_null() {
            request = request.json(&body);
        }
        let response: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {tail}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {tail}: bad JSON: {e}"));
        if let Some(error) = response["value"]["error"].as_str() {
            panic!(
                "WebDriver {tail}: {error}: {}",
                response["value"]["message"]
            );
        }
        response["value"].clone()
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and
    /// returns its result.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Runs `script` until it returns something other than `null` / `false`, and
    /// returns that; panics with `what` and the last result after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        script: &str,
        args: Value,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.execute(script, args.clone()).await;
            if !(value.is_null() || value == Value::Bool(false)) {
                return value;
            }
            if Instant::now() >= deadline {
                let html = self
                    .execute(
                        "return document.body ? document.body.outerHTML : ''",
                        json!([]),
                    )
                    .await;
                panic!("timed out waiting for {what}; page: {html}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG screenshot of the window.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("screenshot as base64"))
            .expect("valid base64 screenshot");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.http.delete(self.url("")).send().await;
        self.session.clear();
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked never reached `close`: end the session with a plain
        // blocking request so Chromium does not outlive the test (killing chromedriver
        // alone would orphan it).
        if self.session.is_empty() {
            return;
        }
        if let Ok(mut stream) =
            TcpStream::connect_timeout(&self.driver_addr, Duration::from_secs(2))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.session, self.driver_addr
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
            }
        }
        let _ = self.driver.start_kill();
    }
}
