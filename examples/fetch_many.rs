//! The primers' "send lots of HTTP requests", against a local server this example starts:
//! one after another, on a pool of threads, and on the event loop. Each request waits on a
//! slow server, so the work is waiting, not computing: the model that waits best wins.
//!
//! ```text
//! cargo run --release --example fetch_many
//! ```

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use brigade::{Error, EventLoop, ThreadPool};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// How many requests, and how long the server takes to answer each.
const REQUESTS: usize = 200;
const DELAY: Duration = Duration::from_millis(20);

/// A tiny HTTP/1.1 server on its own event loop: answers every request after `DELAY`, then
/// closes the connection.
fn start_server(lp: &EventLoop) -> SocketAddr {
    let listener = lp
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("not inside a loop")
        .expect("a free port on 127.0.0.1");
    let addr = listener.local_addr().unwrap();
    let server = lp.clone();
    drop(lp.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(server.spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut reader = BufReader::new(reader);
                let mut line = String::new();
                // The request line and headers end with an empty line.
                while reader.read_line(&mut line).await.is_ok_and(|n| n > 2) {
                    line.clear();
                }
                tokio::time::sleep(DELAY).await;
                let body = "hello";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = writer.write_all(response.as_bytes()).await;
            }));
        }
    }));
    addr
}

fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// Blocking: the calling thread waits for the whole round trip.
fn fetch_blocking(addr: SocketAddr, path: &str) -> std::io::Result<usize> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.write_all(request(path).as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(response.len())
}

/// Async: while this request waits, the loop runs the others.
async fn fetch_async(addr: SocketAddr, path: String) -> std::io::Result<usize> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request(&path).as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response.len())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server_loop = EventLoop::builder()
        .workers(1)
        .thread_name("server")
        .build()?;
    let addr = start_server(&server_loop);
    let paths: Vec<String> = (0..REQUESTS).map(|i| format!("/item/{i}")).collect();
    println!(
        "{REQUESTS} GETs to http://{addr}, each answered after {} ms",
        DELAY.as_millis()
    );

    let start = Instant::now();
    let mut bytes = 0;
    for path in &paths {
        bytes += fetch_blocking(addr, path).expect("the server answers");
    }
    report("sequential (one thread)", start, bytes);

    // Threads wait in parallel: 32 of them cut the waiting 32-fold, at a thread each.
    let pool = ThreadPool::builder().workers(32).build()?;
    let start = Instant::now();
    let tasks: Vec<_> = paths
        .iter()
        .cloned()
        .map(|path| pool.submit(move || fetch_blocking(addr, &path)))
        .collect();
    let bytes = tasks
        .into_iter()
        .map(|t| t.result().map(|r| r.expect("the server answers")))
        .sum::<Result<usize, Error>>()?;
    report("thread pool (32 threads)", start, bytes);

    // The event loop waits on all of them at once, on two threads; at most 100 in flight, so
    // a long list of URLs does not open a socket each at the same moment.
    let lp = EventLoop::builder().workers(2).build()?;
    let start = Instant::now();
    let outcomes = lp
        .block_on(lp.map_limited(100, paths, move |path| fetch_async(addr, path)))
        .expect("main is not inside a loop");
    let bytes = outcomes
        .into_iter()
        .map(|outcome| outcome.map(|r| r.expect("the server answers")))
        .sum::<Result<usize, Error>>()?;
    report("event loop (2 threads, 100 in flight)", start, bytes);
    Ok(())
}

fn report(how: &str, start: Instant, bytes: usize) {
    let elapsed = start.elapsed();
    println!(
        "{how:>38}: {:>7.1} ms, {:>6.0} requests/s ({bytes} bytes)",
        elapsed.as_secs_f64() * 1e3,
        REQUESTS as f64 / elapsed.as_secs_f64()
    );
}
