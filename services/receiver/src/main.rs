//! `facewire-receiver`: the receiver alone, without the recognition code (and so without
//! OpenCV's shared libraries, which are most of `facewire`'s resident memory). Same flags
//! and environment as `facewire receiver`; this is the binary the receiver's container runs.

use clap::Parser;
use facewire_config::LogConfig;
use facewire_receiver::ReceiverConfig;

/// facewire's receiver: gRPC ImageService and the tutorial's JSON endpoints.
#[derive(Debug, Parser)]
#[command(name = "facewire-receiver", version, about)]
struct Cli {
    #[command(flatten)]
    log: LogConfig,
    #[command(flatten)]
    config: ReceiverConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    facewire_telemetry::init_tracing(&cli.log);
    match facewire_receiver::serve(cli.config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facewire-receiver: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
