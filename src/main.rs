//! The `stompede` binary: parses arguments and calls into the library.

use clap::Parser;
use stompede::cli::{self, Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => cli::server(args).await.map(|()| 0u8),
            Command::Stack(command) => cli::stack(command).await.map(|()| 0u8),
            Command::Run(args) => Ok(cli::run(args).await),
            Command::Coordinate(args) => Ok(cli::coordinate(args).await),
            Command::Worker(args) => Ok(cli::worker(args).await),
            Command::Gate(args) => Ok(cli::gate(args).await),
            Command::Capacity(args) => Ok(cli::capacity(args).await),
            Command::Sweep(args) => Ok(cli::sweep(args).await),
            Command::Compare(args) => Ok(cli::compare(args)),
        }
    });
    // Sessions and samplers may still hold the runtime; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
