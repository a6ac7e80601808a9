//! `brigade`: run work with the right concurrency model, and see why it is the right one.
//!
//! The binary is thin: arguments are parsed here (clap) and handed to the library half
//! (`brigade_cli`), which builds what they describe and runs it.

use std::io::Write;
use std::process::ExitCode;

use brigade_cli::cluster::{self, ClusterArgs};
use brigade_cli::lab::{self, LabArgs};
use clap::{Parser, Subcommand};

/// Run work with the right concurrency model (threads, processes or an event loop), and see
/// why it is the right one.
#[derive(Debug, Parser)]
#[command(name = "brigade", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the primers' concurrency experiments on this machine: tables, verdicts and an HTML
    /// report with timelines.
    Lab(LabArgs),
    /// Inspect a brigade-cluster queue on Redis: status, dead letters, requeue.
    Cluster(ClusterArgs),
}

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(Cli {
            command: Command::Lab(args),
        }) => lab::run(args),
        Ok(Cli {
            command: Command::Cluster(args),
        }) => cluster::run(args),
        Err(e) => {
            match e.kind() {
                // --help and --version "fail" to parse and print to stdout; a closed stdout
                // (`brigade --help | head -1`) is not worth a panic.
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                // `brigade` alone: the help, as a gentle failure.
                clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::from(2)
                }
                // A user mistake is one line: clap's first (it names the valid choices where
                // there are some), without the usage block after it.
                _ => {
                    let rendered = e.render().to_string();
                    let first = rendered.lines().next().unwrap_or("error: bad arguments");
                    let _ = writeln!(std::io::stderr(), "{first} (see --help)");
                    ExitCode::from(2)
                }
            }
        }
    }
}
