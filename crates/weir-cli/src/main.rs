//! The `weir` command. Today it lints ksqlDB scripts (`weir check`); the server, the REPL
//! and the demo join it as they land.

mod check;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: a streaming SQL engine that speaks ksqlDB's SQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse a script of `;`-separated statements and report each one: `OK <kind>` or
    /// `ERROR line:col message`. Exits 1 if any statement fails.
    Check {
        /// The script to check; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Also accept commands only the REPL runs (RUN SCRIPT).
        #[arg(long)]
        cli: bool,
        /// After each OK, print the statement in canonical form.
        #[arg(long)]
        canonical: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            file,
            cli,
            canonical,
        } => check::run(file.as_deref(), cli, canonical),
    }
}
