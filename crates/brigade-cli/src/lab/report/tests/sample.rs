//! A sample run's outcomes, shaped like a real run's, to look at the report while the
//! experiments are being written, and to check that a report of realistic size stays
//! well-formed and small.

use super::*;

/// A pseudo-random sequence, so the sample looks lively and is the same every time.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Outcomes shaped like a real run's, for looking at the report.
fn sample() -> Vec<Outcome> {
    let mut rng = Lcg(7);
    let mut out = Vec::new();

    let mut cpu = Outcome::new("cpu-bound");
    let chunks = |workers: &[Worker], total_ms: f64, delay_ms: f64, rng: &mut Lcg| {
        let mut spans = Vec::new();
        let per = (total_ms - delay_ms) / (16 / workers.len()) as f64;
        for (i, w) in workers.iter().enumerate() {
            let mut t = delay_ms * (1.0 + i as f64 * 0.1);
            for _ in 0..16 / workers.len() {
                let d = per * (0.9 + 0.1 * rng.next());
                spans.push(span(*w, Kind::Cpu, t, t + d));
                t += d;
            }
        }
        spans
    };
    let threads: Vec<Worker> = (11..15).map(Worker::Thread).collect();
    let procs: Vec<Worker> = (41_230..41_234).map(Worker::Process).collect();
    cpu.timelines.push(timeline(
        "sequential",
        "thread",
        2010,
        chunks(&[Worker::Thread(1)], 2000.0, 0.0, &mut rng),
    ));
    cpu.timelines.push(timeline(
        "threads",
        "thread",
        540,
        chunks(&threads, 530.0, 0.0, &mut rng),
    ));
    cpu.timelines.push(timeline(
        "processes",
        "process",
        600,
        chunks(&procs, 590.0, 40.0, &mut rng),
    ));
    cpu.timelines.push(timeline(
        "event loop",
        "loop thread",
        2030,
        chunks(&[Worker::Thread(2)], 2020.0, 0.0, &mut rng),
    ));
    for (model, wall) in [
        ("sequential", 2.01),
        ("threads", 0.54),
        ("processes", 0.60),
        ("event loop", 2.03),
    ] {
        cpu.measure(model, "wall", wall, "s");
        cpu.measure(model, "speedup", 2.01 / wall, "×");
    }
    cpu.notes
        .push("The event loop runs the chunks one after another on its one thread.".to_owned());
    cpu.conclude(
        "threads ran 3.72× faster than sequential on 4 cores; the event loop 0.990×".to_owned(),
        Some(true),
    );
    out.push(cpu);

    let mut slow = Outcome::new("io-many-slow");
    let requests = 10_000;
    let waits = (0..requests)
        .map(|i| {
            let s = 60.0 * rng.next();
            span(
                Worker::Thread(20 + i % 2),
                Kind::Wait,
                s,
                s + 200.0 + 20.0 * rng.next(),
            )
        })
        .collect();
    slow.timelines
        .push(timeline("event loop", "loop thread", 290, waits));
    let blocks = (0..1000)
        .map(|i| {
            let s = f64::from(i) * 0.35;
            span(
                Worker::Thread(100 + i),
                Kind::Block,
                s,
                s + 200.0 + 10.0 * rng.next(),
            )
        })
        .collect();
    slow.timelines
        .push(timeline("threads", "thread", 640, blocks));
    for (model, wall, mem) in [("event loop", 0.29, 12.0), ("threads", 0.64, 180.0)] {
        slow.measure(model, "wall", wall, "s");
        slow.measure(model, "peak memory", mem, "MiB");
    }
    slow.conclude(format!("the event loop served {requests} requests 2.21× faster than threads, in 15× less memory"), Some(true));
    out.push(slow);

    let mut blocking = Outcome::new("blocking-in-async");
    let ticks = |frozen: bool, rng: &mut Lcg| {
        let mut spans = Vec::new();
        for i in 0..60 {
            let mut s = f64::from(i) * 10.0 + rng.next();
            if frozen && (200.0..500.0).contains(&s) {
                s = 500.0 + rng.next();
            }
            spans.push(span(Worker::Thread(30), Kind::Tick, s, s + 0.05));
        }
        if frozen {
            spans.push(span(Worker::Thread(30), Kind::Block, 200.0, 500.0));
        } else {
            spans.push(span(Worker::Thread(30), Kind::Wait, 200.0, 500.0));
        }
        spans
    };
    blocking.timelines.push(timeline(
        "async sleep",
        "loop thread",
        600,
        ticks(false, &mut rng),
    ));
    blocking.timelines.push(timeline(
        "blocking sleep",
        "loop thread",
        600,
        ticks(true, &mut rng),
    ));
    blocking.measure("async sleep", "worst tick lateness", 1.2, "ms");
    blocking.measure("blocking sleep", "worst tick lateness", 300.0, "ms");
    blocking.conclude(
        "a 300 ms blocking call made ticks up to 300 ms late; the async sleep 1.20 ms".to_owned(),
        Some(true),
    );
    out.push(blocking);

    let mut race = Outcome::new("race");
    race.measure("unsynchronized", "lost updates", 412_345.0, "");
    race.measure("atomic", "lost updates", 0.0, "");
    race.measure("mutex", "lost updates", 0.0, "");
    race.notes
        .push("Each of 4 threads added 1 a million times to one counter.".to_owned());
    race.conclude(
        "the unsynchronized counter lost 10.3 % of the updates; atomic and mutex lost none"
            .to_owned(),
        Some(true),
    );
    out.push(race);

    let mut conc = Outcome::new("concurrency-vs-parallelism");
    let interleaved = (0..40)
        .map(|i| {
            let s = f64::from(i) * 2.5;
            span(Worker::Thread(40), Kind::Cpu, s, s + 2.0)
        })
        .collect();
    conc.timelines
        .push(timeline("one thread, 40 tasks", "thread", 100, interleaved));
    conc.measure("one thread, 40 tasks", "wall", 0.1, "s");
    conc.conclude("on 1 core there is no parallelism to show".to_owned(), None);
    out.push(conc);

    out.push(Outcome::skipped(
        "python",
        "python3 was not found on PATH".to_owned(),
    ));
    out
}

/// Writes a sample report to `target/sample-report.html`, to look at:
/// `cargo test -p brigade-cli sample_report -- --ignored`.
#[test]
#[ignore = "writes target/sample-report.html"]
fn sample_report() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let outcomes = sample();
    let (html, _) = page(&info(false), &outcomes);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sample-report.html"), &html).unwrap();
    let (quick, _) = page(&info(true), &outcomes);
    std::fs::write(dir.join("sample-report-quick.html"), quick).unwrap();
    eprintln!("{} bytes", html.len());
}

#[test]
fn the_sample_is_well_formed() {
    let outcomes = sample();
    let (html, root) = page(&info(true), &outcomes);
    assert_eq!(sections(&root).len(), outcomes.len());
    assert!(html.len() < 4 << 20, "{} bytes", html.len());
}
