//! Timing, medians and the JSON lines.

use std::io::Write;
use std::time::Instant;

use serde_json::{Value, json};

/// The options every suite takes (its own `--only` and extras beside them).
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Repetitions per impl (the median is reported); at least 3 for a reported figure.
    #[arg(long, default_value_t = 5)]
    pub(crate) reps: usize,
    /// Shrink every workload: a smoke test of the harness, not a measurement.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Workers of every pool or runtime under test (default: available parallelism).
    #[arg(long)]
    workers: Option<usize>,
}

impl RunArgs {
    /// Checks the options and gives the worker count to use.
    pub(crate) fn workers(&self) -> anyhow::Result<usize> {
        anyhow::ensure!(self.reps >= 1, "--reps must be at least 1");
        Ok(self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())))
    }

    /// The fields every line of the run carries.
    pub(crate) fn base(&self, workers: usize) -> Value {
        json!({ "workers": workers, "quick": self.quick })
    }

    /// The run of `suite` with these options.
    pub(crate) fn runner(&self, suite: &'static str, workers: usize) -> Runner {
        Runner {
            suite,
            reps: self.reps,
            base: self.base(workers),
        }
    }
}

/// One suite's run: its name, repetitions, and the fields every line carries.
pub(crate) struct Runner {
    suite: &'static str,
    reps: usize,
    pub(crate) base: Value,
}

impl Runner {
    /// Measures `impls` of `workload` side by side (see [`compare`]), adding `extra` fields to
    /// the run's own.
    pub(crate) fn compare(
        &self,
        workload: &str,
        tasks: u64,
        anchor: &str,
        extra: Value,
        impls: Vec<Impl<'_>>,
    ) -> anyhow::Result<()> {
        let mut fields = self.base.clone();
        merge(&mut fields, &extra);
        compare(
            self.suite, workload, tasks, anchor, self.reps, &fields, impls,
        )
    }
}

/// Whether `--only` (empty: everything) selects `workload`.
pub(crate) fn selected(only: &[String], workload: &str) -> bool {
    only.is_empty() || only.iter().any(|o| o == workload)
}

/// The order in which the impls run in repetition `rep`: as listed in the first, then a
/// different shuffle in each (fixed, so that a run can be repeated).
///
/// Whatever an impl leaves behind lands on the one that runs next: an external client's process
/// exiting and its thousand sockets closing, another pool's threads spinning down. In a fixed
/// order (or a rotation of it, which keeps every impl's predecessor) that cost fell on the same
/// impl in every repetition, and the median could not shed it: in `io-slow-many`, the impl
/// listed after the Python client measured ~3 % slower whichever impl it was. Shuffled, each
/// impl follows a different neighbour from one repetition to the next, and the median of its
/// repetitions drops the one that followed a costly neighbour.
pub(crate) fn rep_order(count: usize, rep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    if rep == 0 {
        return order;
    }
    // Fisher–Yates with a SplitMix64 stream seeded by the repetition.
    let mut state = (rep as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..count).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The pause before each measured run.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// One implementation of a workload: a name and a run that returns a checksum (so every impl
/// is checked to compute the same thing, and the optimizer cannot drop the work).
pub(crate) struct Impl<'a> {
    pub(crate) name: &'static str,
    /// Returns the checksum, and the run's own time in ms when it times itself (an external
    /// program whose start-up is not part of the workload); otherwise the wall time counts.
    pub(crate) run: Box<dyn FnMut() -> (u64, Option<f64>) + 'a>,
}

pub(crate) fn imp<'a>(name: &'static str, mut run: impl FnMut() -> u64 + 'a) -> Impl<'a> {
    Impl {
        name,
        run: Box::new(move || (run(), None)),
    }
}

/// An impl that reports its own time (see [`Impl::run`]).
pub(crate) fn self_timed<'a>(name: &'static str, run: impl FnMut() -> (u64, f64) + 'a) -> Impl<'a> {
    let mut run = run;
    Impl {
        name,
        run: Box::new(move || {
            let (checksum, ms) = run();
            (checksum, Some(ms))
        }),
    }
}

/// One impl's repetitions of a workload.
pub(crate) struct Measured {
    pub(crate) name: &'static str,
    /// Every repetition's time, in run order.
    pub(crate) samples_ms: Vec<f64>,
    pub(crate) median_ms: f64,
    pub(crate) min_ms: f64,
    pub(crate) max_ms: f64,
}

impl Measured {
    /// The fields every suite reports for one impl: median, range and per-task time, plus
    /// every repetition when `BRIGADE_BENCH_SAMPLES` is set (to look at the spread).
    pub(crate) fn fields(&self, tasks: u64) -> Value {
        let mut fields = json!({
            "wall_ms": round3(self.median_ms),
            "min_ms": round3(self.min_ms),
            "max_ms": round3(self.max_ms),
            "per_task_ns": round3(self.per_task_ns(tasks)),
        });
        if std::env::var_os("BRIGADE_BENCH_SAMPLES").is_some() {
            let samples: Vec<f64> = self.samples_ms.iter().copied().map(round3).collect();
            merge(&mut fields, &json!({ "samples_ms": samples }));
        }
        fields
    }

    pub(crate) fn per_task_ns(&self, tasks: u64) -> f64 {
        self.median_ms * 1e6 / tasks as f64
    }
}

/// Runs every impl `reps` times, interleaved (rep 1 of each, then rep 2, ..., each in the
/// order [`rep_order`] gives), and checks
/// that their checksums agree. `BRIGADE_BENCH_IMPL=a,b` keeps only the impls named (for
/// profiling one at a time).
pub(crate) fn measure(
    workload: &str,
    reps: usize,
    mut impls: Vec<Impl<'_>>,
) -> anyhow::Result<Vec<Measured>> {
    if let Ok(keep) = std::env::var("BRIGADE_BENCH_IMPL") {
        impls.retain(|i| keep.split(',').any(|k| k == i.name));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(reps); impls.len()];
    let mut checksums: Vec<Option<u64>> = vec![None; impls.len()];
    let count = impls.len();
    for rep in 0..reps {
        for i in rep_order(count, rep) {
            let imp = &mut impls[i];
            // Let the previous impl's threads finish spinning and fall asleep, so that each
            // impl runs on a quiet machine rather than against its predecessor's idle loop.
            std::thread::sleep(SETTLE);
            let start = Instant::now();
            let (checksum, own_ms) = (imp.run)();
            times[i].push(own_ms.unwrap_or_else(|| start.elapsed().as_secs_f64() * 1e3));
            match checksums[i] {
                Some(c) if c != checksum => {
                    anyhow::bail!("{workload}/{}: checksum changed between runs", imp.name)
                }
                _ => checksums[i] = Some(checksum),
            }
        }
    }
    if let Some(&reference) = checksums.first() {
        for (imp, checksum) in impls.iter().zip(&checksums) {
            anyhow::ensure!(
                *checksum == reference,
                "{workload}: {} computed {checksum:?}, {} computed {reference:?}",
                imp.name,
                impls[0].name
            );
        }
    }
    Ok(impls
        .iter()
        .zip(times)
        .map(|(imp, samples_ms)| {
            let mut sorted = samples_ms.clone();
            Measured {
                name: imp.name,
                median_ms: median(&mut sorted),
                min_ms: sorted[0],
                max_ms: sorted[sorted.len() - 1],
                samples_ms,
            }
        })
        .collect())
}

/// Runs every impl `reps` times, interleaved, checks the checksums agree, and prints one line
/// per impl with its median wall time and its ratio against `anchor`.
pub(crate) fn compare(
    suite: &str,
    workload: &str,
    tasks: u64,
    anchor: &str,
    reps: usize,
    extra: &Value,
    impls: Vec<Impl<'_>>,
) -> anyhow::Result<()> {
    let measured = measure(workload, reps, impls)?;
    let rate = extra.get("bytes_per_task").and_then(Value::as_f64);
    let anchor_ms = measured
        .iter()
        .find(|m| m.name == anchor)
        .map(|m| m.median_ms);
    for m in &measured {
        let mut line = json!({
            "suite": suite,
            "workload": workload,
            "impl": m.name,
            "tasks": tasks,
            "reps": reps,
            "anchor": anchor,
            "vs_anchor": anchor_ms.map(|a| round3(a / m.median_ms)),
        });
        merge(&mut line, &m.fields(tasks));
        merge(&mut line, extra);
        if let Some(bytes) = rate {
            let mb_per_s = bytes * tasks as f64 / (m.median_ms / 1e3) / 1e6;
            merge(&mut line, &json!({ "mb_per_s": round3(mb_per_s) }));
        }
        emit(&line);
    }
    Ok(())
}

pub(crate) fn merge(line: &mut Value, extra: &Value) {
    if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
        line.extend(extra.clone());
    }
}

pub(crate) fn emit(line: &Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is not an error worth a panic.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

pub(crate) fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::rep_order;

    #[test]
    fn each_repetition_is_a_permutation_and_the_first_is_as_listed() {
        assert_eq!(rep_order(6, 0), vec![0, 1, 2, 3, 4, 5]);
        for rep in 0..20 {
            let mut order = rep_order(6, rep);
            order.sort_unstable();
            assert_eq!(order, vec![0, 1, 2, 3, 4, 5], "rep {rep}");
        }
        assert!(rep_order(0, 3).is_empty());
        assert_eq!(rep_order(1, 3), vec![0]);
    }

    #[test]
    fn no_impl_keeps_the_same_predecessor_across_repetitions() {
        // The point of the shuffle: over five repetitions (the usual `--reps 5`), the impl
        // that follows any given one is not always the same. A rotation fails this.
        let count = 6;
        for imp in 0..count {
            let mut followers = std::collections::BTreeSet::new();
            for rep in 0..5 {
                let order = rep_order(count, rep);
                let at = order.iter().position(|&i| i == imp).unwrap();
                if let Some(&next) = order.get(at + 1) {
                    followers.insert(next);
                }
            }
            assert!(
                followers.len() >= 2,
                "impl {imp} is always followed by {followers:?}"
            );
        }
    }
}
