//! Support for end-to-end tests: build and spawn the real `facewire` binary against a
//! fresh SQLite file, a fresh PostgreSQL database, a fresh RabbitMQ queue; talk to it
//! with the client library, HTTP and grpcurl; stop it with real signals.
//!
//! Tracing output of spawned services is kept for [`Service::logs`], and also shown when
//! `FACEWIRE_TEST_LOG` is set (it is then the services' log filter).

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use facewire_proto::FacewireClient;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub mod bench;
pub mod browser;
pub mod proxy;
pub mod rolling;

pub use facewire_queue::testing::TestQueue;
pub use facewire_storage::testing::TestDatabase;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ is inside the workspace")
        .to_path_buf()
}

/// The `facewire` binary, built once per test process (`cargo build -p facewire`), or
/// the one `FACEWIRE_BIN` names.
pub fn facewire_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_binary("FACEWIRE_BIN", "facewire", "facewire"))
}

/// The lean `facewire-receiver` binary (the receiver without OpenCV), built once per
/// test process, or the one `FACEWIRE_RECEIVER_BIN` names.
pub fn receiver_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        built_binary(
            "FACEWIRE_RECEIVER_BIN",
            "facewire-receiver",
            "facewire-receiver",
        )
    })
}

fn built_binary(env: &str, package: &str, bin: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Same profile as the caller: benchmarks built with --release measure a release binary.
    let (profile_args, profile_dir): (&[&str], &str) = if cfg!(debug_assertions) {
        (&[], "debug")
    } else {
        (&["--release"], "release")
    };
    let status = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", package, "--bin", bin])
        .args(profile_args)
        .current_dir(workspace_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    target.join(profile_dir).join(bin)
}

/// Which database and queue a spawned service uses.
#[derive(Debug)]
pub struct Backends {
    /// Environment for the service (`FACEWIRE_DATABASE_URL`, `FACEWIRE_AMQP_URL`, ...).
    pub env: HashMap<String, String>,
    /// The PostgreSQL database, when used; dropped with this value.
    pub database: Option<TestDatabase>,
    /// The RabbitMQ queue, when used; deleted with this value.
    pub queue: Option<TestQueue>,
    /// Temp dir holding the data dir.
    pub data_dir: tempfile::TempDir,
}

impl Backends {
    /// The embedded default: SQLite in a temp data dir, the in-process queue.
    pub fn embedded() -> Self {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let mut env = HashMap::new();
        env.insert(
            "FACEWIRE_DATA_DIR".into(),
            data_dir.path().display().to_string(),
        );
        Self {
            env,
            database: None,
            queue: None,
            data_dir,
        }
    }

    /// A fresh PostgreSQL database and a fresh RabbitMQ queue on the local servers.
    pub fn production() -> Self {
        let mut b = Self::embedded();
        let db = TestDatabase::create();
        let queue = TestQueue::new("facewire-it");
        b.env.insert("FACEWIRE_DATABASE_URL".into(), db.url.clone());
        b.env
            .insert("FACEWIRE_AMQP_URL".into(), queue.url().to_string());
        b.env
            .insert("FACEWIRE_QUEUE".into(), queue.name().to_string());
        b.database = Some(db);
        b.queue = Some(queue);
        b
    }

    /// The database URL services get.
    pub fn database_url(&self) -> String {
        self.env
            .get("FACEWIRE_DATABASE_URL")
            .cloned()
            .unwrap_or_else(|| format!("sqlite://{}/facewire.db", self.data_dir.path().display()))
    }
}

/// Replaces the `host:port` of `url` with `addr` (to route through a [`proxy::TcpProxy`]).
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL with a scheme");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, _hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    match userinfo {
        Some(u) => format!("{scheme}://{u}@{addr}/{path}"),
        None => format!("{scheme}://{addr}/{path}"),
    }
}

/// The host:port of a URL.
pub fn url_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("URL with a scheme").1;
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("URL with an IP:port")
}

/// A running `facewire <service>` process.
pub struct Service {
    child: Child,
    /// Addresses the service printed (`gRPC`, `HTTP`).
    pub addrs: HashMap<String, SocketAddr>,
    /// Lines the service printed on stdout.
    pub stdout: Vec<String>,
    /// Lines the service logged on stderr so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Service {
    /// Spawns `facewire <args>` with `env`, on free ports, and waits until it prints
    /// its addresses (a line `<name>: gRPC on A · HTTP on B`).
    pub async fn spawn(args: &[&str], env: &HashMap<String, String>) -> Self {
        Self::spawn_program(facewire_bin(), args, env).await
    }

    /// Like [`Service::spawn`], for another of the workspace's binaries.
    pub async fn spawn_program(
        program: &Path,
        args: &[&str],
        env: &HashMap<String, String>,
    ) -> Self {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("FACEWIRE_GRPC_ADDR", "127.0.0.1:0")
            .env("FACEWIRE_HTTP_ADDR", "127.0.0.1:0")
            .env("FACEWIRE_WEB_ADDR", "127.0.0.1:0")
            .env("FACEWIRE_RECOGNITION_ADDR", "127.0.0.1:0")
            .env("FACEWIRE_MODEL_DIR", workspace_root().join("models"))
            .env("FACEWIRE_DRAIN_SECONDS", "0.2")
            .env(
                "FACEWIRE_LOG",
                std::env::var("FACEWIRE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn facewire");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let kept = logs.clone();
        let show = std::env::var("FACEWIRE_TEST_LOG").is_ok();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if show {
                    // Straight to the terminal, past the test harness's output capture.
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
                kept.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let mut addrs = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while addrs.is_empty() {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("facewire {args:?} did not start: {printed:?}"))
                .expect("read stdout")
                .unwrap_or_else(|| panic!("facewire {args:?} exited: {printed:?}"));
            for part in line.split('·') {
                let words: Vec<&str> = part.split_whitespace().collect();
                if let Some(pos) = words.iter().position(|w| *w == "on") {
                    if let (Some(name), Some(addr)) = (
                        words.get(pos.wrapping_sub(1)),
                        words.get(pos + 1).and_then(|a| a.parse().ok()),
                    ) {
                        addrs.insert(name.to_string(), addr);
                    }
                }
            }
            printed.push(line);
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            addrs,
            stdout: printed,
            logs,
        }
    }

    /// The lines the service has logged (stderr) so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.addrs["gRPC"]
    }

    /// `http://<gRPC address>`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr())
    }

    /// `http://<HTTP address>`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addrs["HTTP"])
    }

    /// `http://<web page address>` (`facewire up` and `facewire frontend`).
    pub fn web_url(&self) -> String {
        format!("http://{}", self.addrs["web"])
    }

    /// A client library connection.
    pub async fn client(&self) -> FacewireClient {
        FacewireClient::connect(self.grpc_url())
            .await
            .expect("connect to service")
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident memory of the process so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Kills the process at once (SIGKILL): no drain, nothing settled.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// Waits for exit (after [`Service::terminate`]); `None` if it did not exit in time.
    pub async fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }
}

/// Runs the `grpcurl` on PATH (scripts/setup installs 1.8.6 into .ci/tools/venv).
pub async fn grpcurl(args: &[&str]) -> std::process::Output {
    let bin = std::env::var("FACEWIRE_GRPCURL").unwrap_or_else(|_| {
        let venv = workspace_root().join(".ci/tools/venv/bin/grpcurl");
        if venv.exists() {
            venv.display().to_string()
        } else {
            "grpcurl".into()
        }
    });
    Command::new(&bin)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {bin} (install it with scripts/setup): {e}"))
}

/// Runs the real `facewire ARGS` (a CLI command) in `dir` with `env`, the workspace's
/// models and quiet logs.
pub async fn run_cli(
    dir: &Path,
    env: &HashMap<String, String>,
    args: &[&str],
) -> std::process::Output {
    Command::new(facewire_bin())
        .args(args)
        .envs(env)
        .env("FACEWIRE_MODEL_DIR", workspace_root().join("models"))
        .env("FACEWIRE_LOG", "warn")
        .current_dir(dir)
        .output()
        .await
        .expect("run facewire")
}

/// Runs `facewire ARGS` (see [`run_cli`]); returns stdout parsed as JSON (`Null` when it
/// is not JSON), or panics with stderr when the command fails.
pub async fn cli(dir: &Path, env: &HashMap<String, String>, args: &[&str]) -> serde_json::Value {
    let out = run_cli(dir, env, args).await;
    assert!(
        out.status.success(),
        "facewire {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The CLI pointed at one running server: `facewire ARGS --server URL`, run in `dir`.
#[derive(Debug, Clone)]
pub struct ServerCli<'a> {
    /// Where it runs (relative paths are read from here).
    pub dir: &'a Path,
    /// Its environment.
    pub env: &'a HashMap<String, String>,
    /// The server's gRPC URL.
    pub server: String,
}

impl ServerCli<'_> {
    /// `facewire ARGS --server URL --json`: stdout as JSON (panics when it fails).
    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--server", &self.server, "--json"]);
        cli(self.dir, self.env, &all).await
    }

    /// `facewire ARGS --server URL` for a command without JSON output (panics when it
    /// fails).
    pub async fn run(&self, args: &[&str]) {
        let mut all = args.to_vec();
        all.extend(["--server", &self.server]);
        cli(self.dir, self.env, &all).await;
    }
}

/// The photos of `person` in the test data (`testdata/dlib/johns/<person>`, one face
/// each), sorted by name.
pub fn photos(person: &str) -> Vec<PathBuf> {
    let dir = workspace_root().join("testdata/dlib/johns").join(person);
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-testdata)", dir.display()))
        .map(|e| e.expect("read the test data").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    photos.sort();
    photos
}

/// A directory of test images (not real photos: the receiver only checks files).
pub fn image_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp image dir");
    std::fs::write(
        dir.path().join("unknown4456.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .expect("write image");
    dir
}
