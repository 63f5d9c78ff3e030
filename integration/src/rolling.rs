//! Replaying a Kubernetes rolling update with real processes.
//!
//! - [`RolloutStrategy::from_chart`] renders the Helm chart (Helm's own library, through
//!   the chart checks' Python tooling) and reads the receiver Deployment's replicas and
//!   `rollingUpdate` the way the Deployment controller resolves them.
//! - [`RolloutStrategy::plan`] is the controller's loop: scale the new ReplicaSet up as
//!   far as `maxSurge` allows, wait until the new pods are ready, scale the old one down
//!   as far as `maxUnavailable` allows, repeat.
//! - [`Front`] stands in for a ClusterIP Service: a TCP front that sends each new
//!   connection to the next ready backend, round robin, and stops choosing a backend once
//!   it is marked draining (its endpoint removed). Connections already open stay open
//!   until the backend closes them, as with kube-proxy: HTTP/2 clients keep one
//!   connection, so they only move when the draining server tells them to (GOAWAY).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use tokio::net::{TcpListener, TcpStream};

use crate::workspace_root;

/// The receiver's replica count and resolved rolling-update bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutStrategy {
    /// Wanted replicas.
    pub replicas: u32,
    /// Pods allowed above `replicas` during the update (resolved from an int or a percentage).
    pub max_surge: u32,
    /// Pods allowed below `replicas` during the update (resolved likewise).
    pub max_unavailable: u32,
}

/// One action of the Deployment controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Scale the new ReplicaSet up by this many pods and wait until they are ready.
    StartNew(u32),
    /// Scale the old ReplicaSet down by this many pods (endpoints removed, SIGTERM).
    StopOld(u32),
}

/// An `IntOrString` of a rolling-update field, resolved against `replicas` as the
/// Deployment controller does: percentages round up for `maxSurge`, down for
/// `maxUnavailable`.
fn resolve(value: &serde_json::Value, replicas: u32, round_up: bool) -> Result<u32, String> {
    match value {
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("{n} is not a pod count")),
        serde_json::Value::String(s) => {
            let pct: u64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("{s:?} is neither a count nor a percentage"))?;
            let scaled = pct * u64::from(replicas);
            let pods = if round_up {
                scaled.div_ceil(100)
            } else {
                scaled / 100
            };
            u32::try_from(pods).map_err(|_| format!("{s:?} of {replicas} is too many pods"))
        }
        other => Err(format!("{other} is neither a count nor a percentage")),
    }
}

impl RolloutStrategy {
    /// Resolves a Deployment's `spec.replicas` and `spec.strategy` (as rendered JSON).
    pub fn from_deployment_spec(
        replicas: &serde_json::Value,
        strategy: &serde_json::Value,
    ) -> Result<Self, String> {
        // Kubernetes defaults: 1 replica, 25% / 25%.
        let replicas = match replicas {
            serde_json::Value::Null => 1,
            v => resolve(v, 0, false)?,
        };
        if strategy["type"] != "RollingUpdate" {
            return Err(format!(
                "strategy type is {}, not RollingUpdate",
                strategy["type"]
            ));
        }
        let rolling = &strategy["rollingUpdate"];
        let pct25 = serde_json::Value::String("25%".into());
        let surge = match &rolling["maxSurge"] {
            serde_json::Value::Null => &pct25,
            v => v,
        };
        let unavailable = match &rolling["maxUnavailable"] {
            serde_json::Value::Null => &pct25,
            v => v,
        };
        let max_surge = resolve(surge, replicas, true)?;
        let mut max_unavailable = resolve(unavailable, replicas, false)?;
        // The controller's fencepost rule: both zero would never progress.
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Ok(Self {
            replicas,
            max_surge,
            max_unavailable,
        })
    }

    /// Renders `charts/facewire` with `values` (a JSON object, as `-f values.json`) with
    /// Helm's library and reads the receiver Deployment.
    ///
    /// # Panics
    /// When the chart tools are missing (`scripts/setup` installs them) or rendering fails.
    pub fn from_chart(values: &serde_json::Value) -> Self {
        let root = workspace_root();
        let python = root.join(".ci/tools/venv/bin/python");
        assert!(
            python.exists(),
            "{} missing: run scripts/setup",
            python.display()
        );
        let script = r#"
import json, sys
import chartlib
objects = chartlib.render(json.loads(sys.argv[1]))
spec = chartlib.deployment(objects, "receiver")["spec"]
print(json.dumps({"replicas": spec.get("replicas"), "strategy": spec.get("strategy")}))
"#;
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg(script)
            .arg(values.to_string())
            .current_dir(root.join("charts/tests"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("run the chart renderer");
        assert!(
            out.status.success(),
            "rendering the chart with {values} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("renderer prints JSON");
        Self::from_deployment_spec(&rendered["replicas"], &rendered["strategy"])
            .unwrap_or_else(|e| panic!("receiver Deployment {rendered}: {e}"))
    }

    /// Ready pods the update never goes below.
    pub fn min_available(&self) -> u32 {
        self.replicas.saturating_sub(self.max_unavailable)
    }

    /// The controller's steps from `replicas` old pods to `replicas` new ones, assuming
    /// each new pod becomes ready before the next step (the test waits for it).
    pub fn plan(&self) -> Vec<Step> {
        let max_total = self.replicas + self.max_surge;
        let min_available = self.min_available();
        let (mut old, mut new) = (self.replicas, 0u32);
        let mut steps = Vec::new();
        while old > 0 || new < self.replicas {
            let up = (self.replicas - new).min(max_total.saturating_sub(old + new));
            if up > 0 {
                steps.push(Step::StartNew(up));
                new += up;
            }
            let down = old.min((old + new).saturating_sub(min_available));
            if down > 0 {
                steps.push(Step::StopOld(down));
                old -= down;
            }
            assert!(
                up > 0 || down > 0,
                "rollout {self:?} cannot progress at old={old} new={new}"
            );
        }
        steps
    }
}

#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    draining: bool,
    connections: u64,
}

#[derive(Debug, Default)]
struct FrontState {
    backends: Vec<Backend>,
    next: usize,
    refused: u64,
}

/// A round-robin TCP front over a changing set of backends (a Service's endpoints).
#[derive(Debug, Clone)]
pub struct Front {
    addr: SocketAddr,
    state: Arc<Mutex<FrontState>>,
}

impl Front {
    /// Starts listening on 127.0.0.1:<free port> with no backends.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
        let addr = listener.local_addr().expect("front addr");
        let state = Arc::new(Mutex::new(FrontState::default()));
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let picked = pick(&accept_state);
                tokio::spawn(async move {
                    // No backend, or the chosen one refuses: the client sees its connection
                    // dropped, as it would behind kube-proxy. The test counts that as failure.
                    let Some(target) = picked else { return };
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    // Half-closes are passed on: when the backend closes its side after a
                    // graceful shutdown, the client reads EOF, as through a real Service.
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Self { addr, state }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a ready backend.
    pub fn add(&self, addr: SocketAddr) {
        let mut s = self.state.lock().expect("front state");
        s.backends.push(Backend {
            addr,
            draining: false,
            connections: 0,
        });
    }

    /// Stops sending new connections to `addr` (its endpoint is removed); open ones stay.
    pub fn drain(&self, addr: SocketAddr) {
        let mut s = self.state.lock().expect("front state");
        for b in s.backends.iter_mut().filter(|b| b.addr == addr) {
            b.draining = true;
        }
    }

    /// Connections each backend was given so far.
    pub fn connections(&self) -> HashMap<SocketAddr, u64> {
        let s = self.state.lock().expect("front state");
        s.backends.iter().map(|b| (b.addr, b.connections)).collect()
    }

    /// Connections that found no ready backend.
    pub fn refused(&self) -> u64 {
        self.state.lock().expect("front state").refused
    }
}

fn pick(state: &Mutex<FrontState>) -> Option<SocketAddr> {
    let mut s = state.lock().expect("front state");
    let n = s.backends.len();
    for i in 0..n {
        let idx = (s.next + i) % n;
        if !s.backends[idx].draining {
            s.next = idx + 1;
            s.backends[idx].connections += 1;
            return Some(s.backends[idx].addr);
        }
    }
    s.refused += 1;
    None
}

/// Writes a small distinct image file under `dir` and returns its name, so every
/// submission has its own path and a duplicate row would show.
pub fn write_image(dir: &Path, name: &str) -> String {
    std::fs::write(dir.join(name), b"\xff\xd8\xff\xe0 rolling test").expect("write image");
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strategy(replicas: u32, surge: u32, unavailable: u32) -> RolloutStrategy {
        RolloutStrategy {
            replicas,
            max_surge: surge,
            max_unavailable: unavailable,
        }
    }

    #[test]
    fn percentages_resolve_like_the_controller() {
        let s = RolloutStrategy::from_deployment_spec(
            &json!(10),
            &json!({"type":"RollingUpdate","rollingUpdate":{"maxSurge":"25%","maxUnavailable":"25%"}}),
        )
        .unwrap();
        assert_eq!((s.max_surge, s.max_unavailable), (3, 2));
        // Both zero after rounding: unavailable becomes 1.
        let s = RolloutStrategy::from_deployment_spec(
            &json!(2),
            &json!({"type":"RollingUpdate","rollingUpdate":{"maxSurge":0,"maxUnavailable":"10%"}}),
        )
        .unwrap();
        assert_eq!((s.max_surge, s.max_unavailable), (0, 1));
        assert!(
            RolloutStrategy::from_deployment_spec(&json!(2), &json!({"type":"Recreate"})).is_err()
        );
        assert!(RolloutStrategy::from_deployment_spec(
            &json!(2),
            &json!({"type":"RollingUpdate","rollingUpdate":{"maxSurge":"x"}})
        )
        .is_err());
    }

    #[test]
    fn plans_follow_surge_and_unavailable() {
        use Step::*;
        assert_eq!(
            strategy(2, 1, 0).plan(),
            vec![StartNew(1), StopOld(1), StartNew(1), StopOld(1)]
        );
        assert_eq!(
            strategy(3, 1, 1).plan(),
            vec![StartNew(1), StopOld(2), StartNew(2), StopOld(1)]
        );
        assert_eq!(
            strategy(2, 0, 1).plan(),
            vec![StopOld(1), StartNew(1), StopOld(1), StartNew(1)]
        );
        assert_eq!(strategy(2, 2, 0).plan(), vec![StartNew(2), StopOld(2)]);
    }

    #[test]
    fn plans_never_break_the_bounds() {
        for replicas in 1..6 {
            for surge in 0..4 {
                for unavailable in 0..4 {
                    if surge == 0 && unavailable == 0 {
                        continue;
                    }
                    let s = strategy(replicas, surge, unavailable);
                    let (mut old, mut new) = (replicas, 0);
                    for step in s.plan() {
                        match step {
                            Step::StartNew(k) => new += k,
                            Step::StopOld(k) => old -= k,
                        }
                        assert!(old + new <= replicas + surge, "{s:?}");
                        assert!(old + new >= s.min_available(), "{s:?}");
                    }
                    assert_eq!((old, new), (0, replicas), "{s:?}");
                }
            }
        }
    }
}
