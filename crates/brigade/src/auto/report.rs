//! The explain report: per call site, where its work runs, what it measured, and every move
//! with its reason.

use std::fmt;
use std::panic::Location;
use std::time::Duration;

use super::classify::{Lane, Millis};

/// What a call site submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Work {
    /// Closures (`submit`, `map`): the whole call is measured.
    Calls,
    /// Futures (`spawn`): each poll is measured.
    Futures,
}

/// One move of a call site from one lane to another (or its first placement).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Move {
    /// When, since the pool was built.
    pub at: Duration,
    /// Calls (or spawns) submitted from the site before the move.
    pub calls: u64,
    /// Calls (or polls) that had run and been probed when the move was decided: in a burst,
    /// many more calls may have been submitted than had run.
    pub samples: u64,
    /// Where its work ran before (`None`: the site was new).
    pub from: Option<Lane>,
    /// Where it runs now.
    pub to: Lane,
    /// Why, in words and numbers.
    pub reason: String,
}

/// What the router knows about one call site (see [`Auto::report`](super::Auto::report)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SiteReport {
    /// The `submit`/`spawn`/`map` call in the user's code.
    pub location: &'static Location<'static>,
    /// Closures or futures.
    pub work: Work,
    /// Where the site's work goes now (`None`: not placed yet). Hinted calls go where the
    /// hint says whatever this is.
    pub lane: Option<Lane>,
    /// The lane a hint (`.cpu()`, `.blocking()`) sent the site's last hinted call to.
    pub hint: Option<Lane>,
    /// Calls (closures) or spawns (futures) so far: exact when one thread submits from the
    /// site, possibly short of the truth when several do at once (it is counted without a
    /// locked instruction, to keep the cost of a tiny call down).
    pub calls: u64,
    /// Calls or polls probed (CPU time and context switches read).
    pub samples: u64,
    /// CPU time over wall time of the probed calls or polls.
    pub cpu_ratio: f64,
    /// Median duration of a timed call (closures) or probed poll (futures).
    pub p50: Duration,
    /// 99th percentile of the same.
    pub p99: Duration,
    /// Probed calls or polls by the lane they ran on.
    pub ran_on: [(Lane, u64); 3],
    /// Every move, oldest first.
    pub moves: Vec<Move>,
    /// Calls that panicked, among those measured (every call of a site not placed yet, and of
    /// a site whose calls take 20 µs or more; one in up to 1024 of a tiny one).
    pub panics: u64,
    /// Advice the router will not act on by itself (isolation is the user's choice).
    pub suggestion: Option<String>,
}

/// What the elastic blocking lane did (see [`Report::blocking`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BlockingStats {
    /// Threads alive now.
    pub threads: usize,
    /// Threads idle now.
    pub idle: usize,
    /// The most threads alive at once.
    pub peak: usize,
    /// Threads started in all.
    pub started: u64,
    /// Threads retired after idling.
    pub retired: u64,
    /// Jobs waiting for a thread now.
    pub queued: usize,
    /// The most threads the lane may have.
    pub max: usize,
}

/// The router's report: every call site it has seen, and its lanes.
///
/// `Display` prints it as a table followed by every move:
///
/// ```
/// use brigade::auto::Auto;
///
/// let auto = Auto::builder().workers(2).build()?;
/// auto.submit(|| 2 + 2).result()?;
/// let report = auto.report();
/// assert_eq!(report.sites.len(), 1);
/// let text = report.to_string();
/// assert!(text.contains("compute") || text.contains("new"), "{text}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// Every site, the busiest (most calls) first.
    pub sites: Vec<SiteReport>,
    /// Threads of the compute lane.
    pub compute_threads: usize,
    /// Worker threads of the event loop.
    pub loop_threads: usize,
    /// The blocking lane.
    pub blocking: BlockingStats,
    /// Whether measurement is on (`BRIGADE_AUTO=off` or `.measure(false)` pin the defaults).
    pub measuring: bool,
}

impl Report {
    /// The report line of the site at `file:line` (the first such site), if any.
    ///
    /// ```
    /// let auto = brigade::auto::Auto::new();
    /// let line = line!() + 1;
    /// auto.submit(|| ()).result().unwrap();
    /// assert!(auto.report().site(file!(), line).is_some());
    /// ```
    pub fn site(&self, file: &str, line: u32) -> Option<&SiteReport> {
        self.sites
            .iter()
            .find(|s| s.location.file() == file && s.location.line() == line)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "brigade auto: {} compute threads, {} loop threads, blocking lane {} threads \
             ({} idle, peak {}, max {}){}",
            self.compute_threads,
            self.loop_threads,
            self.blocking.threads,
            self.blocking.idle,
            self.blocking.peak,
            self.blocking.max,
            if self.measuring {
                ""
            } else {
                "; measurement off (defaults pinned)"
            }
        )?;
        writeln!(
            f,
            "{:<40} {:<8} {:<11} {:>8} {:>8} {:>8} {:>10} {:>10}",
            "site", "work", "lane", "calls", "samples", "cpu/wall", "p50", "p99"
        )?;
        for s in &self.sites {
            let lane = match (s.lane, s.hint) {
                (_, Some(h)) => format!("{h} (hint)"),
                (Some(l), None) => l.to_string(),
                (None, None) => "new".to_owned(),
            };
            let work = match s.work {
                Work::Calls => "calls",
                Work::Futures => "futures",
            };
            writeln!(
                f,
                "{:<40} {:<8} {:<11} {:>8} {:>8} {:>8.2} {:>10} {:>10}",
                s.location.to_string(),
                work,
                lane,
                s.calls,
                s.samples,
                s.cpu_ratio,
                Millis(s.p50.as_nanos() as f64).to_string(),
                Millis(s.p99.as_nanos() as f64).to_string(),
            )?;
        }
        for s in &self.sites {
            for m in &s.moves {
                writeln!(
                    f,
                    "  {} at {:.3} s (after {} calls, {} probed): {} -> {}: {}",
                    s.location,
                    m.at.as_secs_f64(),
                    m.calls,
                    m.samples,
                    m.from.map_or("new", Lane::as_str),
                    m.to,
                    m.reason
                )?;
            }
            if let Some(suggestion) = &s.suggestion {
                writeln!(f, "  {}: {suggestion}", s.location)?;
            }
        }
        Ok(())
    }
}
