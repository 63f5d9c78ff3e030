//! `facewire migrate`: apply migrations and exit (the Helm hook Job runs this).

use std::process::ExitCode;

use facewire_config::StorageConfig;
use facewire_storage::{Store, StoreOptions};

/// Arguments of `facewire migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    storage: StorageConfig,
}

/// Opens the database, which applies pending migrations.
pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let url = args.storage.database_url();
    Store::open(&url, StoreOptions::default()).await?;
    println!("migrations applied to {}", facewire_storage::redact(&url));
    Ok(ExitCode::SUCCESS)
}
