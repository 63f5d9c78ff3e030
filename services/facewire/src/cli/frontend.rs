//! `facewire frontend`: the web page as its own process.

use std::process::ExitCode;

use facewire_frontend::{Frontend, FrontendConfig};
use facewire_server::CancellationToken;

/// Serves the web page until SIGTERM / Ctrl-C: then `/readyz` reports draining for the
/// drain delay, live streams close and in-flight requests finish.
pub async fn run(config: FrontendConfig) -> anyhow::Result<ExitCode> {
    let frontend = Frontend::build(&config).await?;
    let signal = facewire_server::termination_signal();
    println!("frontend: HTTP on {}", frontend.http_addr());
    let shutdown = CancellationToken::new();
    let drain = frontend.drain_handle();
    let delay = config.drain.delay();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        drain.drain();
        tokio::time::sleep(delay).await;
        stop.cancel();
    });
    frontend.run_until_stopped(shutdown).await?;
    tracing::info!("frontend stopped");
    Ok(ExitCode::SUCCESS)
}
