//! A tour of brigade's futures API, following the classic `ThreadPoolExecutor` tutorial:
//! submit work, collect results as they complete, wait for a batch, cancel what has not
//! started, react to completion with callbacks, and map over an input.
//!
//! ```text
//! cargo run --example futures_tour
//! ```

use std::sync::mpsc;
use std::time::{Duration, Instant};

use brigade::{Error, ThreadPool, Until, as_completed, wait};

/// Stands in for a download: blocks the calling thread for a while, like real blocking I/O.
fn fetch(url: &str) -> Result<usize, String> {
    let delay = 20 + 15 * (url.len() as u64 % 5);
    std::thread::sleep(Duration::from_millis(delay));
    if url.contains("broken") {
        return Err(format!("{url}: connection refused"));
    }
    Ok(url.len() * 1000)
}

fn main() -> Result<(), Error> {
    // A few threads help with blocking I/O even on one core: while one waits, another runs.
    let pool = ThreadPool::builder()
        .workers(4)
        .thread_name("fetcher")
        .build()
        .unwrap();
    let urls = [
        "https://example.com/",
        "https://example.org/menu",
        "https://broken.example/",
        "https://example.net/kitchen",
        "https://example.edu/recipes/rice",
    ];

    println!("1. submit + as_completed: results in the order they finish");
    let start = Instant::now();
    let tasks = urls.map(|url| (url, pool.submit(move || fetch(url))));
    for done in as_completed(tasks, Some(Duration::from_secs(10))) {
        let (url, task) = done?;
        match task.result()? {
            Ok(bytes) => println!("   {url:<36} {bytes:>6} bytes"),
            Err(e) => println!("   {url:<36} failed: {e}"),
        }
    }
    println!(
        "   all five in {:?} (one after another: ~{}ms)\n",
        start.elapsed(),
        5 * 50
    );

    println!("2. wait: the first to finish, then the rest");
    let tasks: Vec<_> = urls
        .iter()
        .map(|&url| pool.submit(move || fetch(url)))
        .collect();
    let first = wait(&tasks, Until::FirstCompleted, None);
    println!(
        "   {} done, {} still running",
        first.done.len(),
        first.pending.len()
    );
    let all = wait(&tasks, Until::AllCompleted, Some(Duration::from_secs(10)));
    println!(
        "   {} done, {} still running\n",
        all.done.len(),
        all.pending.len()
    );

    println!("3. cancel: only what has not started yet");
    let (go, wait_for_go) = mpsc::channel::<()>();
    let one_worker = ThreadPool::builder().workers(1).build().unwrap();
    let busy = one_worker.submit(move || wait_for_go.recv().unwrap());
    let queued = one_worker.submit(|| fetch("https://example.com/never"));
    println!("   queued task cancelled: {}", queued.cancel());
    println!("   its outcome: {:?}", queued.result());
    go.send(()).unwrap();
    println!(
        "   the running task could not be cancelled and finished: {:?}\n",
        busy.result()
    );

    println!("4. done callbacks: run when a task finishes");
    let (tx, rx) = mpsc::channel();
    let task = pool.submit(|| fetch("https://example.org/menu"));
    task.add_done_callback(move |outcome| {
        tx.send(format!("callback saw {outcome:?}")).unwrap();
    });
    println!("   {}\n", rx.recv().unwrap());

    println!("5. map: ordered results, one per input, failures in their own slot");
    for (url, result) in urls.iter().zip(pool.map(urls, fetch)) {
        println!("   {url:<36} {:?}", result?);
    }
    println!("\n6. a panic is an error for that task only; the pool goes on");
    println!("   (Rust's panic hook prints the panic to stderr as it happens)");
    let bad = pool.submit(|| -> usize { panic!("the oven is on fire") });
    println!("   {:?}", bad.result());
    println!("   next task: {:?}", pool.submit(|| 1 + 1).result());
    Ok(())
}
