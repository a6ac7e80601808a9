//! The false alarm the event loop's detector raises today: a thousand connections opening at
//! once make some first polls slow while nothing blocks. Under the auto router their call site
//! must stay on the loop. (No duration is asserted: the test checks the decision.)

mod common;

use std::time::Duration;

use brigade::auto::{Auto, Lane, Work};
use common::Watchdog;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP server on its own runtime: reads a request, waits `delay`, answers "ok".
fn server(delay: Duration) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // A deep accept queue: the burst must not overflow it (a dropped SYN costs a second).
        socket.listen(4096).unwrap()
    });
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, rt)
}

/// How many connections at once: 1,000, or fewer where the descriptor limit is low.
fn connections() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        limit.current = Some(max);
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    // Two descriptors per connection (client and server side), and room for the rest.
    (soft.saturating_sub(200) / 2).min(1000) as usize
}

async fn get(addr: std::net::SocketAddr) -> usize {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    response.len()
}

#[test]
fn a_burst_of_connection_starts_is_not_flagged() {
    let _w = Watchdog::new("a_burst_of_connection_starts_is_not_flagged");
    let (addr, _server) = server(Duration::from_millis(50));
    let n = connections();
    assert!(
        n >= 100,
        "too few file descriptors for the test: {n} connections"
    );
    let auto = Auto::builder().workers(2).build().unwrap();
    for _round in 0..3 {
        let tasks: Vec<_> = (0..n).map(|_| auto.spawn(get(addr))).collect();
        for task in tasks {
            assert!(task.result().unwrap() > 0);
        }
    }
    let report = auto.report();
    let site = report
        .sites
        .iter()
        .find(|s| s.work == Work::Futures)
        .expect("the connections' site");
    assert_eq!(site.calls, 3 * n as u64);
    assert_eq!(site.lane, Some(Lane::Loop), "{report}");
    assert!(site.moves.is_empty(), "a false alarm:\n{report}");
}
