use std::process::ExitCode;

use clap::Parser;

use workspaced::app::{shutdown_signal, Application};
use workspaced::cli::{self, Cli, Command};
use workspaced::config::Settings;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve => {
            workspaced::logging::init();
            let result = async { Application::build(settings).await?.run_until(shutdown_signal()).await }.await;
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = ?e, "workspaced failed");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        other => cli::run_command(&settings, other).await,
    }
}
