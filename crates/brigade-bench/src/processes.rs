//! The `processes` suite: brigade's process pool against procspawn, Python's
//! `ProcessPoolExecutor`, and brigade's own thread pool.

use std::process::Command;

use anyhow::Context;
use brigade::{ProcessPool, ThreadPool};
use serde_bytes::ByteBuf;
use serde_json::{Value, json};

use crate::measure::{Impl, emit, imp, median, round3, self_timed};
use crate::threads::{calibrate_ms, kernel};

const SUITE: &str = "processes";
const WORKLOADS: [&str; 6] = [
    "roundtrip",
    "roundtrip-batched",
    "roundtrip-latency",
    "cpu-fanout",
    "payload",
    "payload-sweep",
];
/// The Python side, shipped with the bench crate.
const PYTHON_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/process_pool.py");

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) run: crate::measure::RunArgs,
    /// Run only these workloads (repeatable).
    #[arg(long = "only", value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS))]
    only: Vec<String>,
    /// `payload-sweep` at these sizes only, in KiB (comma-separated), instead of 1 KiB to 1 GiB.
    #[arg(long, value_delimiter = ',')]
    sweep_kib: Vec<usize>,
}

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn kernel_task((seed, iters): (u64, u64)) -> u64 {
    kernel(seed, iters)
}

/// The payload task: touches every byte, so the result is a fresh 1 MiB buffer.
fn flip(mut bytes: ByteBuf) -> ByteBuf {
    bytes.iter_mut().for_each(|b| *b = !*b);
    bytes
}

fn checksum_squares(tasks: u64) -> u64 {
    (0..tasks).map(square).fold(0, u64::wrapping_add)
}

struct Bench {
    workers: usize,
    run: crate::measure::Runner,
    brigade: ProcessPool,
    procspawn: procspawn::Pool,
    python: Option<String>,
}

impl Bench {
    /// Python's pool on `workload`, self-timed (its interpreter and pool start-up excluded).
    fn python<'a>(&'a self, name: &'static str, tasks: u64, chunksize: u64) -> Option<Impl<'a>> {
        let python = self.python.as_deref()?;
        let workers = self.workers;
        Some(self_timed(name, move || {
            let out = Command::new(python)
                .args([
                    PYTHON_SCRIPT,
                    "roundtrip",
                    &tasks.to_string(),
                    &chunksize.to_string(),
                    &workers.to_string(),
                ])
                .output()
                .expect("python3 runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
            (
                line["checksum"].as_u64().expect("checksum"),
                line["ms"].as_f64().expect("ms"),
            )
        }))
    }
}

/// `python3`, if it is on PATH and runs.
fn find_python() -> Option<String> {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import concurrent.futures")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| "python3".to_owned())
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let workers = args.run.workers()?;
    let wants = |w: &str| crate::measure::selected(&args.only, w);
    let scale = if args.run.quick { 100 } else { 1 };
    let brigade = ProcessPool::builder().workers(workers).build()?;
    let procspawn = procspawn::Pool::new(workers).context("procspawn pool")?;
    let python = find_python();
    if python.is_none() {
        emit(&json!({ "suite": SUITE, "skipped": "python", "reason": "python3 not found" }));
    }
    let bench = Bench {
        workers,
        run: args.run.runner(SUITE, workers),
        brigade,
        procspawn,
        python,
    };
    if wants("roundtrip") {
        roundtrip(&bench, 20_000 / scale)?;
    }
    if wants("roundtrip-batched") {
        roundtrip_batched(&bench, 20_000 / scale)?;
    }
    if wants("roundtrip-latency") {
        roundtrip_latency(&bench, 2_000 / scale)?;
    }
    if wants("cpu-fanout") {
        cpu_fanout(&bench, 2_000 / scale)?;
    }
    if wants("payload") {
        payload(&bench, 1_000 / scale)?;
    }
    if wants("payload-sweep") {
        // --quick stops at 16 MiB: a smoke test of the harness, not a measurement.
        let largest = if args.run.quick { 16 << 20 } else { 1 << 30 };
        payload_sweep(&bench, args.run.reps, largest, &args.sweep_kib);
    }
    bench.procspawn.shutdown();
    Ok(())
}

/// Every task submitted on its own (one message each way), all submitted, then all awaited.
fn roundtrip(bench: &Bench, tasks: u64) -> anyhow::Result<()> {
    let pool = &bench.brigade;
    let spawner = &bench.procspawn;
    let mut impls = vec![
        imp("brigade", move || {
            let handles: Vec<_> = (0..tasks).map(|i| pool.submit(square, i)).collect();
            handles
                .into_iter()
                .map(|t| t.result().unwrap())
                .fold(0, u64::wrapping_add)
        }),
        // procspawn holds a few file descriptors per outstanding call, so 20,000 at once run
        // out of them: it gets a window of 256 calls in flight instead.
        imp("procspawn", move || {
            windowed(tasks, 256, |i| spawner.spawn(i, square), |x| x)
        }),
    ];
    impls.extend(bench.python("python-chunk1", tasks, 1));
    impls.extend(bench.python("python-chunk100", tasks, 100));
    debug_assert_eq!(checksum_squares(tasks), checksum_squares(tasks));
    bench
        .run
        .compare("roundtrip", tasks, "procspawn", json!({}), impls)
}

/// The same tasks through `map`, in chunks.
fn roundtrip_batched(bench: &Bench, tasks: u64) -> anyhow::Result<()> {
    let pool = &bench.brigade;
    let mut impls = vec![
        imp("brigade-chunk100", move || {
            pool.map(0..tasks, square)
                .chunk_size(100)
                .map(Result::unwrap)
                .fold(0, u64::wrapping_add)
        }),
        imp("brigade-chunk1000", move || {
            pool.map(0..tasks, square)
                .chunk_size(1_000)
                .map(Result::unwrap)
                .fold(0, u64::wrapping_add)
        }),
    ];
    impls.extend(bench.python("python-chunk100", tasks, 100));
    bench.run.compare(
        "roundtrip-batched",
        tasks,
        "python-chunk100",
        json!({}),
        impls,
    )
}

/// One task at a time: submit, wait, repeat. The latency of one round trip.
fn roundtrip_latency(bench: &Bench, tasks: u64) -> anyhow::Result<()> {
    let pool = &bench.brigade;
    let spawner = &bench.procspawn;
    bench.run.compare(
        "roundtrip-latency",
        tasks,
        "procspawn",
        json!({}),
        vec![
            imp("brigade", move || {
                (0..tasks)
                    .map(|i| pool.submit(square, i).result().unwrap())
                    .fold(0, u64::wrapping_add)
            }),
            imp("procspawn", move || {
                (0..tasks)
                    .map(|i| spawner.spawn(i, square).join().unwrap())
                    .fold(0, u64::wrapping_add)
            }),
        ],
    )
}

/// The threads suite's ~1 ms kernel, on processes and on threads.
fn cpu_fanout(bench: &Bench, tasks: u64) -> anyhow::Result<()> {
    let iters = calibrate_ms();
    let pool = &bench.brigade;
    let threads = ThreadPool::builder().workers(bench.workers).build()?;
    let threads = &threads;
    bench.run.compare(
        "cpu-fanout",
        tasks,
        "brigade-threads",
        json!({ "kernel_iters": iters }),
        vec![
            imp("brigade-processes", move || {
                let handles: Vec<_> = (0..tasks)
                    .map(|i| pool.submit(kernel_task, (i, iters)))
                    .collect();
                handles
                    .into_iter()
                    .map(|t| t.result().unwrap())
                    .fold(0, u64::wrapping_add)
            }),
            imp("brigade-threads", move || {
                let handles: Vec<_> = (0..tasks)
                    .map(|i| threads.submit(move || kernel(i, iters)))
                    .collect();
                handles
                    .into_iter()
                    .map(|t| t.result().unwrap())
                    .fold(0, u64::wrapping_add)
            }),
        ],
    )
}

/// 1 MiB in and 1 MiB out per task; `mb_per_s` counts both directions.
fn payload(bench: &Bench, tasks: u64) -> anyhow::Result<()> {
    const MIB: usize = 1 << 20;
    let pool = &bench.brigade;
    // procspawn is left out here: its 1 MiB calls stalled (ipc-channel) in this harness.
    let threads = ThreadPool::builder().workers(bench.workers).build()?;
    let threads = &threads;
    let input = |i: u64| ByteBuf::from(vec![i as u8; MIB]);
    let sum = |b: ByteBuf| u64::from(b[0]) + u64::from(b[MIB - 1]);
    let window = 2 * bench.workers;
    bench.run.compare(
        "payload",
        tasks,
        "brigade-threads",
        json!({ "bytes_per_task": 2 * MIB }),
        vec![
            imp("brigade", move || {
                pool.map((0..tasks).map(input), flip)
                    .in_flight(window)
                    .map(|r| sum(r.unwrap()))
                    .sum()
            }),
            // The same work without crossing a process boundary: what the copies cost.
            imp("brigade-threads", move || {
                threads
                    .map((0..tasks).map(input), flip)
                    .in_flight(window)
                    .map(|r| sum(r.unwrap()))
                    .sum()
            }),
        ],
    )
}

/// One round trip at a time with `bytes` in and `bytes` out (1 KiB to 1 GiB): round-trip time
/// must grow linearly with the size. Each line gives the median over `reps` of one round
/// trip's time (each round trip's output is the next one's input), with the throughput counted one
/// way (`gb_per_s`, the payload's bytes per second) and both ways (`gb_per_s_both_ways`, in
/// plus out, as `payload`'s `mb_per_s` counts); the anchor is the same work on the thread pool,
/// where nothing is copied across a process boundary; `fresh-copies` is the floor no transport
/// can beat: the two copies into fresh memory whose result the caller and the task own.
fn payload_sweep(bench: &Bench, reps: usize, largest: usize, only_kib: &[usize]) {
    let pool = &bench.brigade;
    let threads = ThreadPool::builder()
        .workers(1)
        .build()
        .expect("a thread pool");
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    let sizes = [
        KIB,
        16 * KIB,
        256 * KIB,
        MIB,
        4 * MIB,
        16 * MIB,
        64 * MIB,
        256 * MIB,
        512 * MIB,
        1024 * MIB,
    ];
    let sizes: Vec<usize> = if only_kib.is_empty() {
        sizes.into_iter().filter(|&b| b <= largest).collect()
    } else {
        only_kib.iter().map(|kib| kib * KIB).collect()
    };
    for bytes in sizes {
        let mut times: [Vec<f64>; 3] = [
            Vec::with_capacity(reps),
            Vec::with_capacity(reps),
            Vec::with_capacity(reps),
        ];
        // Each impl's repetitions back to back (not interleaved), each feeding its output to
        // the next: brigade keeps large buffers warm only while calls keep coming (it lets
        // them go after a second without one), and building a fresh input between calls
        // would take about that long at 512 MiB.
        for (i, times) in times.iter_mut().enumerate() {
            let mut value = ByteBuf::from(vec![3u8; bytes]);
            for _ in 0..reps {
                let expected = !value[bytes - 1];
                std::thread::sleep(std::time::Duration::from_millis(20));
                let start = std::time::Instant::now();
                let output = match i {
                    0 => pool.submit(flip, value).result(),
                    1 => threads.submit(move || flip(value)).result(),
                    // No transport at all: the two copies into fresh memory that a round trip
                    // cannot avoid (the worker's decoded argument, the caller's decoded
                    // result), and the task between them.
                    _ => Ok(ByteBuf::from(flip(ByteBuf::from(value.to_vec())).to_vec())),
                }
                .expect("the payload comes back");
                let ms = start.elapsed().as_secs_f64() * 1e3;
                assert!(output.len() == bytes && output[bytes - 1] == expected);
                value = output;
                times.push(ms);
            }
        }
        let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
        let anchor = medians[1];
        let names = ["brigade", "brigade-threads", "fresh-copies"];
        for (name, ms) in names.into_iter().zip(medians) {
            let gb_per_s = bytes as f64 / (ms / 1e3) / 1e9;
            let mut line = bench.run.base.clone();
            crate::measure::merge(
                &mut line,
                &json!({
                    "suite": SUITE,
                    "workload": "payload-sweep",
                    "impl": name,
                    "payload_bytes": bytes,
                    "wall_ms": round3(ms),
                    "reps": reps,
                    "gb_per_s": round3(gb_per_s),
                    "gb_per_s_both_ways": round3(2.0 * gb_per_s),
                    "anchor": "brigade-threads",
                    "vs_anchor": round3(anchor / ms),
                }),
            );
            emit(&line);
        }
    }
}

/// Runs procspawn calls with at most `window` in flight, folding `value` of each result.
fn windowed<R>(
    tasks: u64,
    window: usize,
    spawn: impl Fn(u64) -> procspawn::JoinHandle<R>,
    value: impl Fn(R) -> u64,
) -> u64
where
    R: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut total = 0u64;
    let mut handles = std::collections::VecDeque::with_capacity(window);
    for i in 0..tasks {
        handles.push_back(spawn(i));
        if handles.len() >= window {
            let done = handles.pop_front().expect("non-empty").join().unwrap();
            total = total.wrapping_add(value(done));
        }
    }
    handles
        .into_iter()
        .map(|h| value(h.join().unwrap()))
        .fold(total, u64::wrapping_add)
}
