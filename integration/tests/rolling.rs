//! A rolling update of the receiver, replayed with real processes the way the Deployment
//! controller does it, with the replicas and `maxSurge`/`maxUnavailable` the Helm chart
//! renders: receivers of the first release (legacy `SubmitImage` and `/image/post` only)
//! behind a round-robin front are replaced step by step by current receivers, each old
//! one removed from the front and sent SIGTERM, while old and new clients keep
//! submitting. Nothing may fail, and every accepted image must be in the database once.
//!
//! All receivers share one fresh PostgreSQL database and one fresh RabbitMQ queue.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use facewire_integration::{
    facewire_bin,
    rolling::{write_image, Front, RolloutStrategy, Step},
    Backends, Service,
};
use facewire_proto::{v1::submit_result::Outcome, FacewireClient};
use facewire_storage::{Store, StoreOptions};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// The four kinds of client that meet a rolling update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// The generated client calling the legacy `SubmitImage` RPC.
    GrpcLegacy,
    /// `FacewireClient::submit_images`: batch RPC, falling back on UNIMPLEMENTED.
    GrpcBatch,
    /// `POST /image/post`.
    JsonSingle,
    /// `POST /images/post`, falling back to `/image/post` on 404.
    JsonBatch,
}

const KINDS: [Kind; 4] = [
    Kind::GrpcLegacy,
    Kind::GrpcBatch,
    Kind::JsonSingle,
    Kind::JsonBatch,
];

#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    failures: Vec<String>,
    /// (id, path) of every accepted image.
    accepted: Vec<(i64, String)>,
    /// Requests served by the old API after the new one was tried.
    fallbacks: u64,
    /// Requests the new API answered.
    new_api: u64,
}

#[derive(Clone)]
struct Load {
    tallies: Arc<Mutex<HashMap<Kind, Tally>>>,
    stop: Arc<AtomicBool>,
    images: PathBuf,
}

impl Load {
    fn requests(&self, kind: Kind) -> u64 {
        self.tallies
            .lock()
            .unwrap()
            .get(&kind)
            .map_or(0, |t| t.requests)
    }

    fn record(&self, kind: Kind, f: impl FnOnce(&mut Tally)) {
        f(self.tallies.lock().unwrap().entry(kind).or_default());
    }

    /// Waits until every kind of client has completed `more` requests beyond `since`.
    async fn progress(&self, since: &HashMap<Kind, u64>, more: u64, what: &str) {
        for _ in 0..6000 {
            if KINDS
                .iter()
                .all(|k| self.requests(*k) >= since.get(k).copied().unwrap_or(0) + more)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("clients made no progress {what}: {:?}", self.snapshot());
    }

    fn snapshot(&self) -> HashMap<Kind, u64> {
        KINDS.iter().map(|k| (*k, self.requests(*k))).collect()
    }
}

/// One receiver process and its generation.
struct Pod {
    service: Service,
    old: bool,
}

async fn spawn_receiver(env: &HashMap<String, String>, old: bool) -> Pod {
    let mut env = env.clone();
    if old {
        env.insert("FACEWIRE_LEGACY_API_ONLY".into(), "true".into());
    }
    let service = Service::spawn(&["receiver"], &env).await;
    wait_serving(service.grpc_addr()).await;
    Pod { service, old }
}

/// Waits until the receiver's gRPC health check says SERVING (the readiness probe).
async fn wait_serving(addr: SocketAddr) {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect for health");
    let mut health = HealthClient::new(channel);
    for _ in 0..500 {
        if let Ok(r) = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
        {
            if r.into_inner().status == ServingStatus::Serving as i32 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("receiver at {addr} never reported SERVING");
}

fn accepted_id(v: &Value) -> Option<i64> {
    v["id"].as_i64()
}

/// An old client: the generated client library's legacy single-image call.
///
/// (The bare tonic-generated `ImageServiceClient` has no transparent retry: a request it
/// queues on a connection in the instant the draining server's GOAWAY closes it fails
/// with CANCELLED although the server never saw it. `FacewireClient` resends exactly
/// those requests; see `call_with_transparent_retry!` in proto/src/client.rs.)
async fn grpc_legacy_client(load: Load, front: SocketAddr) {
    let mut client = FacewireClient::connect(format!("http://{front}"))
        .await
        .expect("connect through the front");
    let mut n = 0u64;
    while !load.stop.load(Ordering::SeqCst) {
        n += 1;
        let path = write_image(&load.images, &format!("grpc-legacy-{n}.jpg"));
        let result = client.submit_image(path.clone()).await;
        load.record(Kind::GrpcLegacy, |t| {
            t.requests += 1;
            match result {
                Ok(img) => t.accepted.push((img.id, path)),
                Err(s) => t.failures.push(format!("SubmitImage {path}: {s:?}")),
            }
        });
    }
}

async fn grpc_batch_client(load: Load, front: SocketAddr) {
    let mut client = FacewireClient::connect(format!("http://{front}"))
        .await
        .expect("connect through the front");
    let mut n = 0u64;
    while !load.stop.load(Ordering::SeqCst) {
        n += 1;
        let paths = vec![
            write_image(&load.images, &format!("grpc-batch-{n}-a.jpg")),
            write_image(&load.images, &format!("grpc-batch-{n}-b.jpg")),
        ];
        let result = client.submit_images(paths.clone()).await;
        let legacy_after = client.uses_legacy_rpc();
        load.record(Kind::GrpcBatch, |t| {
            t.requests += 1;
            if legacy_after {
                t.fallbacks += 1;
            } else {
                t.new_api += 1;
            }
            match result {
                Ok(results) => {
                    for (r, path) in results.into_iter().zip(paths) {
                        match r.outcome {
                            Some(Outcome::Image(img)) => t.accepted.push((img.id, path)),
                            other => t.failures.push(format!("{path} refused: {other:?}")),
                        }
                    }
                }
                Err(s) => t.failures.push(format!("submit_images {paths:?}: {s:?}")),
            }
        });
    }
}

async fn json_single_client(load: Load, front: SocketAddr) {
    let http = reqwest::Client::new();
    let mut n = 0u64;
    while !load.stop.load(Ordering::SeqCst) {
        n += 1;
        let path = write_image(&load.images, &format!("json-single-{n}.jpg"));
        let result = post_json(&http, front, "/image/post", json!({ "path": path })).await;
        load.record(Kind::JsonSingle, |t| {
            t.requests += 1;
            match result {
                Ok((200, body)) => match accepted_id(&body) {
                    Some(id) => t.accepted.push((id, path)),
                    None => t.failures.push(format!("/image/post answered {body}")),
                },
                Ok((status, body)) => t
                    .failures
                    .push(format!("/image/post {path}: {status} {body}")),
                Err(e) => t.failures.push(format!("/image/post {path}: {e}")),
            }
        });
    }
}

/// The tutorial's new client: the batch endpoint, and the old one path by path when a
/// server answers 404 (it predates the batch endpoint).
async fn json_batch_client(load: Load, front: SocketAddr) {
    let http = reqwest::Client::new();
    let mut n = 0u64;
    while !load.stop.load(Ordering::SeqCst) {
        n += 1;
        let paths = [
            write_image(&load.images, &format!("json-batch-{n}-a.jpg")),
            write_image(&load.images, &format!("json-batch-{n}-b.jpg")),
        ];
        let body =
            json!({ "paths": paths.iter().map(|p| json!({ "path": p })).collect::<Vec<_>>() });
        let result = post_json(&http, front, "/images/post", body).await;
        let mut tally = Tally {
            requests: 1,
            ..Tally::default()
        };
        match result {
            Ok((200, body)) => {
                tally.new_api += 1;
                for (i, path) in paths.iter().enumerate() {
                    match body["results"][i]["id"].as_i64() {
                        Some(id) => tally.accepted.push((id, path.clone())),
                        None => tally.failures.push(format!("{path} refused: {body}")),
                    }
                }
            }
            Ok((404, _)) => {
                tally.fallbacks += 1;
                for path in &paths {
                    match post_json(&http, front, "/image/post", json!({ "path": path })).await {
                        Ok((200, body)) => match accepted_id(&body) {
                            Some(id) => tally.accepted.push((id, path.clone())),
                            None => tally.failures.push(format!("/image/post answered {body}")),
                        },
                        Ok((status, body)) => tally
                            .failures
                            .push(format!("fallback /image/post {path}: {status} {body}")),
                        Err(e) => tally
                            .failures
                            .push(format!("fallback /image/post {path}: {e}")),
                    }
                }
            }
            Ok((status, body)) => tally
                .failures
                .push(format!("/images/post {paths:?}: {status} {body}")),
            Err(e) => tally.failures.push(format!("/images/post {paths:?}: {e}")),
        }
        load.record(Kind::JsonBatch, |t| {
            t.requests += tally.requests;
            t.new_api += tally.new_api;
            t.fallbacks += tally.fallbacks;
            t.accepted.append(&mut tally.accepted);
            t.failures.append(&mut tally.failures);
        });
    }
}

async fn post_json(
    http: &reqwest::Client,
    front: SocketAddr,
    path: &str,
    body: Value,
) -> Result<(u16, Value), String> {
    let resp = http
        .post(format!("http://{front}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("{e:?}"))?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Every image row in the database: id → path.
async fn all_rows(database_url: &str) -> HashMap<i64, String> {
    let store = Store::open(database_url, StoreOptions::default())
        .await
        .expect("open the database");
    let mut rows = HashMap::new();
    let mut before = None;
    loop {
        let page = store.list(None, before, 1000).await.expect("list images");
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        for r in page {
            rows.insert(r.id, r.path);
        }
    }
    rows
}

async fn rolling_update(values: Value) {
    let strategy = RolloutStrategy::from_chart(&values);
    assert!(
        strategy.min_available() >= 1,
        "{strategy:?} allows zero ready receivers: an outage by configuration"
    );
    let plan = strategy.plan();
    println!("chart values {values} → {strategy:?}; plan {plan:?}");

    let backends = Backends::production();
    let images = tempfile::tempdir().expect("image dir");
    let mut env = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert("FACEWIRE_DRAIN_SECONDS".into(), "0.5".into());
    // The chart's pre-upgrade hook: migrations run once, before any receiver starts.
    let migrate = std::process::Command::new(facewire_bin())
        .arg("migrate")
        .envs(&env)
        .output()
        .expect("run facewire migrate");
    assert!(migrate.status.success(), "migrate: {migrate:?}");

    let grpc_front = Front::start().await;
    let http_front = Front::start().await;
    let mut pods: Vec<Pod> = Vec::new();
    for _ in 0..strategy.replicas {
        let pod = spawn_receiver(&env, true).await;
        grpc_front.add(pod.service.grpc_addr());
        http_front.add(pod.service.addrs["HTTP"]);
        pods.push(pod);
    }

    let load = Load {
        tallies: Arc::default(),
        stop: Arc::new(AtomicBool::new(false)),
        images: images.path().to_path_buf(),
    };
    let clients = vec![
        tokio::spawn(grpc_legacy_client(load.clone(), grpc_front.addr())),
        tokio::spawn(grpc_batch_client(load.clone(), grpc_front.addr())),
        tokio::spawn(json_single_client(load.clone(), http_front.addr())),
        tokio::spawn(json_batch_client(load.clone(), http_front.addr())),
    ];
    load.progress(&HashMap::new(), 20, "before the update")
        .await;

    for step in &plan {
        let before = load.snapshot();
        match *step {
            Step::StartNew(k) => {
                for _ in 0..k {
                    let pod = spawn_receiver(&env, false).await;
                    grpc_front.add(pod.service.grpc_addr());
                    http_front.add(pod.service.addrs["HTTP"]);
                    pods.push(pod);
                }
            }
            Step::StopOld(k) => {
                let mut stopping = Vec::new();
                for _ in 0..k {
                    let i = pods.iter().position(|p| p.old).expect("an old receiver");
                    let pod = pods.remove(i);
                    // Endpoint removal and SIGTERM, as when the controller deletes a pod.
                    grpc_front.drain(pod.service.grpc_addr());
                    http_front.drain(pod.service.addrs["HTTP"]);
                    pod.service.terminate();
                    stopping.push(pod);
                }
                for mut pod in stopping {
                    let status = pod
                        .service
                        .wait(Duration::from_secs(30))
                        .await
                        .expect("an old receiver did not exit after SIGTERM");
                    assert!(status.success(), "old receiver exited with {status:?}");
                }
            }
        }
        // Traffic flows in every intermediate state.
        load.progress(&before, 10, &format!("after {step:?}")).await;
    }
    assert!(pods.iter().all(|p| !p.old) && pods.len() == strategy.replicas as usize);
    let before = load.snapshot();
    load.progress(&before, 20, "after the update").await;
    load.stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }

    let tallies = std::mem::take(&mut *load.tallies.lock().unwrap());
    let rows = all_rows(&backends.database_url()).await;
    let mut accepted: HashMap<i64, String> = HashMap::new();
    let mut duplicate_ids = Vec::new();
    let mut failures = Vec::new();
    let mut kinds: Vec<_> = tallies.iter().collect();
    kinds.sort_by_key(|(k, _)| **k);
    for (kind, t) in &kinds {
        println!(
            "{kind:?}: {} requests, {} images accepted, {} failed, {} by the new API, {} by fallback",
            t.requests,
            t.accepted.len(),
            t.failures.len(),
            t.new_api,
            t.fallbacks
        );
        for (id, path) in &t.accepted {
            if accepted.insert(*id, path.clone()).is_some() {
                duplicate_ids.push(*id);
            }
        }
        failures.extend(t.failures.iter().cloned());
    }
    let mut per_path: HashMap<&str, usize> = HashMap::new();
    for path in rows.values() {
        *per_path.entry(path.as_str()).or_default() += 1;
    }
    let repeated: Vec<_> = per_path.iter().filter(|(_, n)| **n > 1).collect();
    let total_requests: u64 = tallies.values().map(|t| t.requests).sum();
    println!(
        "total: {total_requests} requests, {} failed; {} images accepted; {} rows in the database; \
         grpc front connections {:?} (refused {}), http front connections {:?} (refused {})",
        failures.len(),
        accepted.len(),
        rows.len(),
        grpc_front.connections().values().collect::<Vec<_>>(),
        grpc_front.refused(),
        http_front.connections().values().collect::<Vec<_>>(),
        http_front.refused(),
    );

    assert!(
        failures.is_empty(),
        "{} failed requests: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    assert!(
        duplicate_ids.is_empty(),
        "ids given twice: {duplicate_ids:?}"
    );
    assert!(
        repeated.is_empty(),
        "paths stored more than once: {repeated:?}"
    );
    let row_ids: HashSet<i64> = rows.keys().copied().collect();
    let accepted_ids: HashSet<i64> = accepted.keys().copied().collect();
    assert_eq!(
        row_ids.len(),
        accepted_ids.len(),
        "rows in the database vs accepted images"
    );
    assert_eq!(
        row_ids, accepted_ids,
        "the database holds exactly the accepted images"
    );
    for (id, path) in &accepted {
        assert_eq!(
            rows.get(id),
            Some(path),
            "image {id} stored with another path"
        );
    }
    // Both client generations really met both server generations.
    let batch = &tallies[&Kind::JsonBatch];
    assert!(batch.fallbacks > 0 && batch.new_api > 0, "{batch:?}");
    assert!(tallies[&Kind::GrpcBatch].fallbacks > 0);

    for pod in &pods {
        pod.service.terminate();
    }
    for mut pod in pods {
        assert!(pod
            .service
            .wait(Duration::from_secs(30))
            .await
            .is_some_and(|s| s.success()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_update_with_the_chart_defaults_drops_nothing() {
    rolling_update(json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_update_with_surge_and_unavailable_overrides_drops_nothing() {
    rolling_update(json!({
        "receiver": {
            "replicaCount": 3,
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
        }
    }))
    .await;
}
