//! What the lab shows while it runs: an indicatif bar on a terminal, plain lines otherwise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Progress through the chosen experiments, on stderr (stdout carries the results).
pub(crate) struct Progress {
    total: usize,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar when stdout is a terminal (someone is watching); otherwise one line per
    /// experiment, which logs and CI read well.
    pub(crate) fn new(total: usize, interactive: bool) -> Self {
        let bar = interactive.then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{pos}/{len}] {prefix} {wide_msg}")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { total, bar }
    }

    /// Experiment number `index` (from 0) starts.
    pub(crate) fn start(&self, index: usize, name: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(index as u64);
                bar.set_prefix(name.to_owned());
                bar.set_message("");
            }
            None => eprintln!("[{}/{}] {name}", index + 1, self.total),
        }
    }

    /// The running experiment is at `what`.
    pub(crate) fn step(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_owned());
        }
    }

    /// The running experiment ended; its table is about to be printed.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message("");
        }
    }

    /// Runs `print` with the bar hidden, so that printed lines do not tangle with it.
    pub(crate) fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// Takes the bar off the screen for good.
    pub(crate) fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
