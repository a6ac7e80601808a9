//! `io-few-fast` and `io-many-slow`: HTTP requests to the embedded local server, under every
//! model. The server runs on its own thread; only the clients change between rows.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use brigade::event_loop::gather;
use brigade::{EventLoop, ProcessPool, ThreadPool};

use super::compared;
use crate::lab::outcome::{factor, number};
use crate::lab::record::{Worker, now_ns};
use crate::lab::{Ctx, Kind, Outcome, Span, Timeline};
use brigade_http::{blocking_connection, hyper_connection, path, share};

/// One span per answered request: the time since the previous answer (or since the start)
/// on one connection, whose requests go one after another.
struct Stamps {
    last: u64,
    kind: Kind,
    spans: Vec<Span>,
}

impl Stamps {
    fn new(kind: Kind) -> Self {
        Stamps {
            last: now_ns(),
            kind,
            spans: Vec::new(),
        }
    }

    fn answered(&mut self, worker: Worker) {
        let now = now_ns();
        self.spans.push(Span {
            worker,
            kind: self.kind,
            start_ns: self.last,
            end_ns: now,
        });
        self.last = now;
    }
}

/// One blocking connection on this thread.
fn blocking(addr: SocketAddr, path: &str, requests: usize) -> anyhow::Result<Vec<Span>> {
    let mut stamps = Stamps::new(Kind::Block);
    blocking_connection(addr, path, requests, || stamps.answered(Worker::thread()))?;
    Ok(stamps.spans)
}

/// One blocking connection in a worker process (a process-pool task: errors travel as text).
fn process_connection(
    (addr, path, requests): (SocketAddr, String, usize),
) -> Result<Vec<Span>, String> {
    let mut stamps = Stamps::new(Kind::Block);
    blocking_connection(addr, &path, requests, || stamps.answered(Worker::process()))
        .map_err(|e| format!("{e:#}"))?;
    Ok(stamps.spans)
}

/// One thread per connection, optionally all pinned to a single CPU.
fn threads(
    addr: SocketAddr,
    path: &str,
    requests: usize,
    connections: usize,
    one_cpu: bool,
) -> anyhow::Result<Vec<Span>> {
    let cpu = if one_cpu { Some(first_cpu()?) } else { None };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|i| {
                s.spawn(move || {
                    if let Some(cpu) = &cpu {
                        rustix::thread::sched_setaffinity(None, cpu)
                            .context("pinning a client thread to one CPU")?;
                    }
                    blocking(addr, path, share(requests, connections, i))
                })
            })
            .collect();
        let mut spans = Vec::new();
        for h in handles {
            spans.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))??,
            );
        }
        Ok(spans)
    })
}

/// A set holding only the first CPU this process may run on.
fn first_cpu() -> anyhow::Result<rustix::thread::CpuSet> {
    let allowed = rustix::thread::sched_getaffinity(None).context("reading the CPU affinity")?;
    let first = (0..rustix::thread::CpuSet::MAX_CPU)
        .find(|&c| allowed.is_set(c))
        .context("no CPU is allowed")?;
    let mut one = rustix::thread::CpuSet::new();
    one.set(first);
    Ok(one)
}

/// Connections as tasks on a brigade thread pool of `workers`.
fn pool_threads(
    pool: &ThreadPool,
    addr: SocketAddr,
    path: &str,
    requests: usize,
    connections: usize,
) -> anyhow::Result<Vec<Span>> {
    let tasks = (0..connections)
        .map(|i| {
            let path = path.to_owned();
            let n = share(requests, connections, i);
            pool.submit(move || blocking(addr, &path, n))
        })
        .collect::<Vec<_>>();
    let mut spans = Vec::new();
    for task in tasks {
        spans.extend(task.result()??);
    }
    Ok(spans)
}

fn processes(
    pool: &ProcessPool,
    addr: SocketAddr,
    path: &str,
    requests: usize,
    connections: usize,
) -> anyhow::Result<Vec<Span>> {
    let tasks = (0..connections)
        .map(|i| {
            pool.submit(
                process_connection,
                (addr, path.to_owned(), share(requests, connections, i)),
            )
        })
        .collect::<Vec<_>>();
    let mut spans = Vec::new();
    for task in tasks {
        spans.extend(task.result()?.map_err(|e| anyhow::anyhow!(e))?);
    }
    Ok(spans)
}

fn event_loop(
    lp: &EventLoop,
    addr: SocketAddr,
    path: &str,
    requests: usize,
    connections: usize,
) -> anyhow::Result<Vec<Span>> {
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let path = path.to_owned();
            let n = share(requests, connections, i);
            lp.spawn(async move {
                let mut stamps = Stamps::new(Kind::Wait);
                hyper_connection(addr, path, n, || stamps.answered(Worker::thread())).await?;
                anyhow::Ok(stamps.spans)
            })
        })
        .collect();
    let mut spans = Vec::new();
    for list in lp.block_on(gather(tasks))?? {
        spans.extend(list?);
    }
    Ok(spans)
}

/// One row of an I/O experiment.
struct Row<'a> {
    model: &'a str,
    row_kind: &'static str,
    requests: usize,
    connections: usize,
    /// Client threads or processes the model used.
    workers: usize,
    run: Box<dyn FnOnce(usize, usize) -> anyhow::Result<Vec<Span>> + 'a>,
}

/// Runs every row and records requests, connections, workers, wall, req/s and the speedup
/// over the first row (sequential).
fn measure(ctx: &Ctx, outcome: &mut Outcome, rows: Vec<Row<'_>>) -> anyhow::Result<()> {
    let mut baseline = None;
    for row in rows {
        ctx.step(row.model);
        let start_ns = now_ns();
        let started = Instant::now();
        let spans = (row.run)(row.requests, row.connections)
            .with_context(|| format!("the {} run", row.model))?;
        let wall = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            spans.len() == row.requests,
            "{}: {} of {} requests answered",
            row.model,
            spans.len(),
            row.requests
        );
        let rate = row.requests as f64 / wall;
        let baseline = *baseline.get_or_insert(rate);
        outcome.measure(row.model, "requests", row.requests as f64, "");
        outcome.measure(row.model, "connections", row.connections as f64, "");
        outcome.measure(row.model, "client threads", row.workers as f64, "");
        outcome.measure(row.model, "wall", wall, "s");
        outcome.measure(row.model, "rate", rate, "req/s");
        outcome.measure(row.model, "speedup", rate / baseline, "×");
        outcome
            .timelines
            .push(Timeline::new(row.model, row.row_kind, start_ns, spans));
    }
    Ok(())
}

pub(crate) fn few_fast(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let addr = ctx.server()?;
    let requests = ctx.size(8_000, 200);
    let connections = 4;
    let workers = ctx.workers;
    let path = path(0);
    let path = path.as_str();
    let processes_pool = ProcessPool::builder().workers(connections).build()?;
    let lp = EventLoop::builder().workers(1).build()?;
    let mut outcome = Outcome::new("io-few-fast");
    let rows = vec![
        Row {
            model: "sequential",
            row_kind: "thread",
            requests: requests / 2,
            connections: 1,
            workers: 1,
            run: Box::new(|n, _| blocking(addr, path, n)),
        },
        Row {
            model: "threads",
            row_kind: "thread",
            requests,
            connections,
            workers: connections,
            run: Box::new(|n, c| threads(addr, path, n, c, false)),
        },
        Row {
            model: "threads, all on one CPU",
            row_kind: "thread",
            requests,
            connections,
            workers: connections,
            run: Box::new(|n, c| threads(addr, path, n, c, true)),
        },
        Row {
            model: "processes",
            row_kind: "process",
            requests,
            connections,
            workers: connections,
            run: Box::new(|n, c| processes(&processes_pool, addr, path, n, c)),
        },
        Row {
            model: "event loop (1 thread)",
            row_kind: "loop thread",
            requests,
            connections,
            workers: 1,
            run: Box::new(|n, c| event_loop(&lp, addr, path, n, c)),
        },
    ];
    measure(ctx, &mut outcome, rows)?;
    outcome.notes.push(format!(
        "{connections} keep-alive connections to the local server (1 thread of its own), no \
         server-side delay; process workers were started before timing; --workers ({workers}) \
         does not apply: each connection gets its own thread or process"
    ));
    let speedup = |m: &str| outcome.get(m, "speedup").unwrap_or(f64::NAN);
    let rate = |m: &str| outcome.get(m, "rate").unwrap_or(f64::NAN);
    let (threads, one_cpu, procs, lp) = (
        speedup("threads"),
        speedup("threads, all on one CPU"),
        speedup("processes"),
        speedup("event loop (1 thread)"),
    );
    let agrees = threads > 1.2 && one_cpu > 1.2;
    let best = [
        "threads",
        "threads, all on one CPU",
        "processes",
        "event loop (1 thread)",
    ]
    .into_iter()
    .max_by(|a, b| rate(a).total_cmp(&rate(b)))
    .expect("four models");
    outcome.conclude(
        format!(
            "{connections} threads served {}× the sequential rate, and still {}× with every \
             client thread on one CPU; processes {}×, a one-thread event loop {}×; fastest: \
             {best} ({} req/s) — {}",
            number(threads),
            number(one_cpu),
            number(procs),
            number(lp),
            number(rate(best)),
            if agrees {
                "agrees with the primers: threads help I/O-bound work, even on one CPU, \
                 because a thread waiting for a response leaves the CPU to another"
            } else {
                "threads did not help here, which differs from the primers"
            }
        ),
        Some(agrees),
    );
    Ok(outcome)
}

/// Raises this process's open-file limit toward `wanted` (one per connection, twice over:
/// the server's side is in this process too), as far as the hard limit allows.
fn allow_files(wanted: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return current;
    }
    let raised = limit.maximum.map_or(wanted, |max| max.min(wanted));
    let ok = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        },
    )
    .is_ok();
    if ok { raised } else { current }
}

pub(crate) fn many_slow(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let addr = ctx.server()?;
    let delay_ms: u64 = ctx.size(50, 10);
    let many = ctx.size(1000, 100);
    let files = allow_files(2 * many as u64 + 256);
    anyhow::ensure!(
        files >= 2 * many as u64 + 64,
        "io-many-slow needs about {} open files for {many} connections, and the limit is \
         {files} (raise it with `ulimit -n`)",
        2 * many + 64
    );
    let pool_threads_n = 64.min(many);
    let procs = ctx.size(16, 4);
    let path = path(delay_ms);
    let path = path.as_str();
    let mut outcome = Outcome::new("io-many-slow");
    let mut flagged = false;
    let rows = vec![
        Row {
            model: "sequential",
            row_kind: "thread",
            requests: ctx.size(10, 3),
            connections: 1,
            workers: 1,
            run: Box::new(|n, _| blocking(addr, path, n)),
        },
        Row {
            model: "event loop",
            row_kind: "loop thread",
            requests: 10 * many,
            connections: many,
            workers: ctx.workers,
            run: Box::new(|n, c| {
                // The primers' event loop: brigade's blocking detection off (the next row
                // has it on).
                let lp = EventLoop::builder()
                    .workers(ctx.workers)
                    .blocking_threshold(Duration::MAX)
                    .build()?;
                event_loop(&lp, addr, path, n, c)
            }),
        },
        Row {
            model: "event loop + detection",
            row_kind: "loop thread",
            requests: 10 * many,
            connections: many,
            workers: ctx.workers,
            run: Box::new(|n, c| {
                let lp = EventLoop::builder().workers(ctx.workers).build()?;
                let spans = event_loop(&lp, addr, path, n, c)?;
                flagged = lp.blocking_report().iter().any(|s| s.flagged);
                Ok(spans)
            }),
        },
        Row {
            model: "threads, one per connection",
            row_kind: "thread",
            requests: 10 * many,
            connections: many,
            workers: many,
            run: Box::new(|n, c| threads(addr, path, n, c, false)),
        },
        Row {
            model: "thread pool of 64",
            row_kind: "thread",
            requests: 4 * pool_threads_n,
            connections: pool_threads_n,
            workers: pool_threads_n,
            run: Box::new(|n, c| {
                let pool = ThreadPool::builder().workers(c).build()?;
                pool_threads(&pool, addr, path, n, c)
            }),
        },
        Row {
            model: "processes, one per connection",
            row_kind: "process",
            requests: 4 * procs,
            connections: procs,
            workers: procs,
            run: Box::new(|n, c| {
                // Started inside the timing: starting processes is part of what they cost.
                let pool = ProcessPool::builder().workers(c).build()?;
                processes(&pool, addr, path, n, c)
            }),
        },
    ];
    measure(ctx, &mut outcome, rows)?;
    outcome.notes.push(format!(
        "the server answers each request after {delay_ms} ms; rows use different request \
         counts so that each takes about the same time: compare rates; wall times include \
         starting each model's threads or processes"
    ));
    if flagged {
        outcome.notes.push(
            "brigade's detector flagged the connections' spawn site as blocking (a first poll \
             that opens a connection can be slow on a busy machine) and moved later polls \
             off the loop's threads"
                .to_owned(),
        );
    }
    let rate = |m: &str| outcome.get(m, "rate").unwrap_or(f64::NAN);
    let (lp, detected, per_conn, pool, procs_rate) = (
        rate("event loop"),
        rate("event loop + detection"),
        rate("threads, one per connection"),
        rate("thread pool of 64"),
        rate("processes, one per connection"),
    );
    // The rule holds when the loop keeps up with a thread per connection (within 20 %) on a
    // handful of threads, and outruns the bounded alternatives.
    let agrees = lp > pool && lp > procs_rate && lp >= 0.8 * per_conn;
    outcome.conclude(
        format!(
            "the event loop served {} req/s on {} threads; {many} threads (one per \
             connection) {} it at {} req/s ({}), a pool of {pool_threads_n} threads managed \
             {} req/s and {procs} processes {} req/s; with brigade's detection on, the loop \
             served {} req/s — {}",
            number(lp),
            ctx.workers,
            compared(per_conn, lp),
            number(per_conn),
            factor(per_conn, lp),
            number(pool),
            number(procs_rate),
            number(detected),
            if agrees {
                "agrees with the rule: many slow connections want an event loop, which needs \
                 no thread per connection (Linux copes with a thousand threads, but each costs \
                 a stack and a kernel task)"
            } else {
                "differs from the rule here"
            }
        ),
        Some(agrees),
    );
    Ok(outcome)
}
