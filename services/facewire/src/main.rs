//! `facewire`: one binary, one subcommand per service, plus `up` and client commands.

use clap::{Parser, Subcommand};
use facewire_config::LogConfig;

mod cli;

/// facewire recognises the people in images.
#[derive(Debug, Parser)]
#[command(name = "facewire", version, about)]
struct Cli {
    #[command(flatten)]
    log: LogConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process (SQLite + in-process queue by default).
    Up(cli::up::UpArgs),
    /// Run the receiver: gRPC ImageService and the JSON endpoints.
    Receiver(facewire_receiver::ReceiverConfig),
    /// Submit images (files or directories) and optionally wait for the people found.
    Submit(cli::submit::SubmitArgs),
    /// Run a processor: queue consumer -> recognition -> database.
    Processor(facewire_processor::ProcessorConfig),
    /// Run the reconciler: re-queue images stuck past a deadline.
    Reconciler(facewire_reconciler::ReconcilerConfig),
    /// Apply database migrations and exit.
    Migrate(cli::migrate::MigrateArgs),
    /// Run the recognition service: gRPC RecognitionService.
    Recognition(facewire_recognition::RecognitionConfig),
    /// Enrol a person from photos (one face each).
    Enroll(cli::recognition::EnrollArgs),
    /// List people with their face and image counts.
    People(cli::people::PeopleArgs),
    /// List images, by person (AND), status or unknown faces.
    Images(cli::people::ImagesArgs),
    /// List the faces of an image, of a person, or unassigned.
    Faces(cli::people::FacesArgs),
    /// Name faces by hand (a new name creates the person).
    Assign(cli::people::AssignArgs),
    /// Take faces away from their person by hand (never given back automatically).
    Unassign(cli::people::UnassignArgs),
    /// Rename a person.
    Rename(cli::people::RenameArgs),
    /// Hide a person from the people list (or --unhide).
    Hide(cli::people::HideArgs),
    /// Merge people into one; prints the merge id for unmerge.
    Merge(cli::people::MergeArgs),
    /// Undo a merge exactly.
    Unmerge(cli::people::UnmergeArgs),
    /// The faces most like a face in an image (or a stored face): search by face.
    Search(cli::people::SearchArgs),
    /// Re-run recognition (stored faces) or detection (images), as a job.
    Rerun(cli::people::RerunArgs),
    /// List re-run jobs with their progress.
    Jobs(cli::people::JobsArgs),
    /// Forget an enrolled person and all their faces.
    Forget(cli::recognition::ForgetArgs),
    /// Find and name the faces in images.
    Recognize(cli::recognition::RecognizeArgs),
    /// Run the web page: images with live status, and the enrolled people.
    Frontend(facewire_frontend::FrontendConfig),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    facewire_telemetry::init_tracing(&cli.log);
    let result = match cli.command {
        Command::Up(args) => cli::up::run(args).await,
        Command::Receiver(config) => cli::serve::receiver(config).await,
        Command::Submit(args) => cli::submit::run(args).await,
        Command::Processor(config) => cli::serve::processor(config).await,
        Command::Reconciler(config) => cli::serve::reconciler(config).await,
        Command::Migrate(args) => cli::migrate::run(args).await,
        Command::Recognition(config) => cli::recognition::serve(config).await,
        Command::Enroll(args) => cli::recognition::enroll(args).await,
        Command::People(args) => cli::people::people(args).await,
        Command::Search(args) => cli::people::search(args).await,
        Command::Images(args) => cli::people::images(args).await,
        Command::Faces(args) => cli::people::faces(args).await,
        Command::Assign(args) => cli::people::assign(args).await,
        Command::Unassign(args) => cli::people::unassign(args).await,
        Command::Rename(args) => cli::people::rename(args).await,
        Command::Hide(args) => cli::people::hide(args).await,
        Command::Merge(args) => cli::people::merge(args).await,
        Command::Unmerge(args) => cli::people::unmerge(args).await,
        Command::Rerun(args) => cli::people::rerun(args).await,
        Command::Jobs(args) => cli::people::jobs(args).await,
        Command::Forget(args) => cli::recognition::forget(args).await,
        Command::Recognize(args) => cli::recognition::recognize(args).await,
        Command::Frontend(config) => cli::frontend::run(config).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("facewire: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
