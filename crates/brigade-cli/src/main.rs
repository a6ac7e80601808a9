//! `brigade`: run work with the right concurrency model, and see why it is the right one.
//!
//! The binary is thin: arguments are parsed here and handed to the library. For now it only
//! describes itself; `brigade lab` (the primers' experiments, measured) and `brigade run`
//! (shell job lists) come next.

use std::process::ExitCode;

use clap::Parser;

/// Run work with the right concurrency model (threads, processes or an event loop), and see
/// why it is the right one.
#[derive(Debug, Parser)]
#[command(name = "brigade", version, arg_required_else_help = true)]
struct Cli {}

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(Cli {}) => ExitCode::SUCCESS,
        Err(e) => {
            // --help and --version "fail" to parse and print to stdout; a closed stdout
            // (`brigade --help | head -1`) is not worth a panic.
            let _ = e.print();
            match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            }
        }
    }
}
