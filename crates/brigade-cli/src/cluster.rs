//! `brigade cluster`: look into a brigade-cluster queue on Redis, list its dead letters, and
//! put them back.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use brigade_cluster::{Admin, DeadLetter, QueueStatus};

/// `brigade cluster`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
    /// The broker, e.g. redis://127.0.0.1:6379/0 (its query may name the queue: ?queue=jobs).
    #[arg(long, value_name = "URL", global = true)]
    pub broker: Option<String>,
    /// The queue (if --broker does not name one).
    #[arg(long, value_name = "NAME", global = true)]
    pub queue: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What to do with the queue.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Queue length, tasks leased per worker, retries waiting, dead letters.
    Status,
    /// The dead letters: tasks whose worker died on every allowed delivery.
    Dead {
        /// List at most this many (oldest first).
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
    },
    /// Put dead letters back in the queue with fresh delivery counts (default: all of them).
    Requeue {
        /// The dead letters' entries (as `dead` lists them).
        #[arg(value_name = "ENTRY")]
        entries: Vec<String>,
    },
}

/// Runs `brigade cluster`.
pub fn run(args: ClusterArgs) -> ExitCode {
    let Some(broker) = args.broker.as_deref() else {
        eprintln!("error: --broker URL is required (see --help)");
        return ExitCode::from(2);
    };
    if !broker.contains("queue=") && args.queue.is_none() {
        eprintln!("error: which queue? add --queue NAME or ?queue=NAME to the URL");
        return ExitCode::from(2);
    }
    match execute(&args, broker) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(args: &ClusterArgs, broker: &str) -> anyhow::Result<()> {
    let mut admin = Admin::connect(broker, args.queue.as_deref())
        .with_context(|| format!("connecting to {broker}"))?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        ClusterCommand::Status => {
            let status = admin.status()?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string(&status)?)?;
            } else {
                write!(out, "{}", render_status(&status))?;
            }
        }
        ClusterCommand::Dead { limit } => {
            let dead = admin.dead_letters(*limit)?;
            if args.json {
                for d in &dead {
                    writeln!(out, "{}", serde_json::to_string(d)?)?;
                }
            } else {
                write!(out, "{}", render_dead(&dead))?;
            }
        }
        ClusterCommand::Requeue { entries } => {
            let which = (!entries.is_empty()).then_some(entries.as_slice());
            let n = admin.requeue(which)?;
            if args.json {
                writeln!(out, "{}", serde_json::json!({ "requeued": n }))?;
            } else {
                let s = if n == 1 { "" } else { "s" };
                writeln!(out, "requeued {n} dead letter{s}")?;
            }
        }
    }
    Ok(())
}

/// The status as a few lines of text.
pub fn render_status(s: &QueueStatus) -> String {
    let mut text = format!(
        "queue {}: {} waiting, {} leased, {} waiting to retry, {} dead\n",
        s.queue, s.waiting, s.pending, s.delayed, s.dead
    );
    if !s.workers.is_empty() {
        let width = s
            .workers
            .iter()
            .map(|w| w.name.len())
            .max()
            .unwrap_or(6)
            .max(6);
        text.push_str(&format!(
            "{:<width$}  {:>7}  {:>9}\n",
            "worker", "leased", "idle"
        ));
        for w in &s.workers {
            text.push_str(&format!(
                "{:<width$}  {:>7}  {:>7.1} s\n",
                w.name,
                w.pending,
                w.idle_ms as f64 / 1000.0
            ));
        }
    }
    text
}

/// The dead letters as a table.
pub fn render_dead(dead: &[DeadLetter]) -> String {
    if dead.is_empty() {
        return "no dead letters\n".to_owned();
    }
    let mut text = String::new();
    for d in dead {
        let function = match (&d.function, d.version) {
            (Some(f), Some(v)) => format!("{f} v{v}"),
            _ => "(unreadable task)".to_owned(),
        };
        text.push_str(&format!(
            "{}  {}  task {}  {} deliveries  last worker {}\n    {}\n",
            d.entry,
            function,
            d.task.as_deref().unwrap_or("?"),
            d.deliveries,
            d.worker,
            d.reason
        ));
    }
    text
}
