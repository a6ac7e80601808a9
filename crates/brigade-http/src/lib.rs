//! A local HTTP server for I/O experiments and the clients that call it: a hyper server on
//! 127.0.0.1 that answers after a delay given in the path, one hyper client for async code, and
//! a minimal blocking HTTP/1.1 client for threads and processes.
//!
//! Internal to the workspace (not published): the lab's I/O experiments (`brigade lab`) and
//! the benchmarks (`brigade-bench`) share it, without the bench depending on the CLI.
//!
//! ```
//! let server = brigade_http::Server::start(1)?;
//! let bytes = brigade_http::blocking_connection(server.addr, &brigade_http::path(0), 3, || {})?;
//! assert_eq!(bytes, 3 * brigade_http::BODY.len() as u64);
//! # Ok::<(), std::io::Error>(())
//! ```

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::io;

/// The body every response carries.
pub const BODY: &[u8] = b"ok";

/// The server, on its own runtime and threads so that it never shares a scheduler with the
/// client under test. Dropping it stops it.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    /// Starts a server with `threads` threads of its own.
    pub fn start(threads: usize) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("brigade-http")
            .enable_all()
            .build()?;
        // A deep accept queue: a thousand clients connecting at once must not overflow it,
        // or dropped SYNs cost each a one-second retransmit and the run measures the kernel.
        let listener = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind("127.0.0.1:0".parse().expect("a valid address"))?;
            socket.listen(4096)
        })?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: let connections drain, then go on.
                        eprintln!("brigade http server: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(answer))
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            _runtime: runtime,
        })
    }
}

/// `GET /delay/<ms>` answers `ok` after that many milliseconds; any other path at once.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay = request
        .uri()
        .path()
        .strip_prefix("/delay/")
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(BODY))))
}

/// The path that asks for `delay_ms`.
pub fn path(delay_ms: u64) -> String {
    format!("/delay/{delay_ms}")
}

/// One keep-alive connection sending `requests` GETs one after another, with hyper's client:
/// the same code for every async caller. Calls `answered` after each response (a timeline
/// takes the time between two calls as one request). Returns the body bytes received.
pub async fn hyper_connection(
    addr: SocketAddr,
    path: String,
    requests: usize,
    mut answered: impl FnMut() + Send,
) -> io::Result<u64> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
    let work = async move {
        let mut bytes = 0u64;
        for _ in 0..requests {
            let request = Request::get(path.as_str())
                .header(hyper::header::HOST, "127.0.0.1")
                .body(Empty::new())
                .map_err(io::Error::other)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(io::Error::other)?;
            if response.status() != 200 {
                return Err(io::Error::other(format!("status {}", response.status())));
            }
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(io::Error::other)?;
            bytes += body.to_bytes().len() as u64;
            answered();
        }
        Ok(bytes)
        // `sender` drops here, which lets `connection` finish.
    };
    // The connection's driver runs beside the requests in the same task, so no impl needs a
    // spawner of its own for it.
    let (driven, bytes) = tokio::join!(connection, work);
    let bytes = bytes?;
    driven.map_err(|e| io::Error::other(format!("connection: {e}")))?;
    Ok(bytes)
}

/// The blocking twin of [`hyper_connection`]: a minimal HTTP/1.1 client over
/// `std::net::TcpStream` (keep-alive, `Content-Length` bodies only, which is what the server
/// sends).
pub fn blocking_connection(
    addr: SocketAddr,
    path: &str,
    requests: usize,
    mut answered: impl FnMut(),
) -> io::Result<u64> {
    let stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut line = String::new();
    let mut body = Vec::new();
    let mut bytes = 0u64;
    for _ in 0..requests {
        writer.write_all(request.as_bytes())?;
        line.clear();
        reader.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 200") {
            return Err(io::Error::other(format!("bad status line {line:?}")));
        }
        let mut length = None;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = Some(value.trim().parse::<usize>().map_err(io::Error::other)?);
            }
        }
        body.resize(
            length.ok_or_else(|| io::Error::other("no content-length"))?,
            0,
        );
        reader.read_exact(&mut body)?;
        bytes += body.len() as u64;
        answered();
    }
    Ok(bytes)
}

/// How many of `total` requests connection `index` of `connections` sends: they differ by at
/// most one.
pub fn share(total: usize, connections: usize, index: usize) -> usize {
    total / connections + usize::from(index < total % connections)
}
