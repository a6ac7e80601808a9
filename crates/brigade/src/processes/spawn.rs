//! Starting a worker process: the greeting that makes it a worker, the handshake that proves it
//! runs this build, and the forwarding of its output.
//!
//! 1. A socket pair, a fresh [ledger](super::ledger) and a random token. The token (and the
//!    ledger, as an `SCM_RIGHTS` descriptor) are written into the worker's end of the socket
//!    *before* the process exists; the token also goes into its environment. The worker
//!    checks that the two match (see [`worker`](super::worker)): only a pool can produce both,
//!    so a stray variable never turns a program into a worker.
//! 2. The worker answers with a hello (protocol version, and the offset of a known function:
//!    equal offsets mean both processes run the same build), gets its settings and initializer
//!    in an init frame, and answers ready (or that its initializer failed).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::call;
use super::ledger::Ledger;
use super::shared::Shared;
use super::wire::{self, FrameReader, FrameWriter, FromWorker};
use super::worker::{TOKEN_LEN, WORKER_ARG, WORKER_ENV};

/// The socket buffer a worker's socket asks for, each way.
const SOCKET_BUFFER: usize = 4 << 20;

/// Why starting a worker failed.
#[derive(Debug)]
pub(crate) enum StartError {
    Start(String),
    Init(String),
}

/// A live worker process, as its slot thread holds it.
pub(crate) struct LiveWorker {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) socket: UnixStream,
    pub(crate) frames: FrameReader,
    pub(crate) forwarders: Vec<JoinHandle<()>>,
    pub(crate) ledger: Ledger,
    /// Bytes written to the worker's stream by the handshake (see `SlotState::stream`).
    pub(crate) stream: u64,
}

/// 128 random bits, from the system's generator (or, where that cannot be read, from the
/// randomly keyed hasher std seeds from it anyway).
pub(crate) fn random_token() -> [u8; TOKEN_LEN] {
    let mut token = [0u8; TOKEN_LEN];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut token));
    if read.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for half in token.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(Instant::now().elapsed().as_nanos());
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    token
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the greeting into the worker's end of the socket, before the worker exists.
fn greet(ours: &UnixStream, token: &[u8; TOKEN_LEN], ledger: &Ledger) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    let fds = [ledger.fd()];
    if !control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the ledger's descriptor"));
    }
    let sent = rustix::net::sendmsg(
        ours,
        &[io::IoSlice::new(token)],
        &mut control,
        rustix::net::SendFlags::NOSIGNAL,
    )?;
    if sent != TOKEN_LEN {
        return Err(io::Error::other("the greeting was cut short"));
    }
    Ok(())
}

/// Whether a failed read is worth retrying: interrupted, or a read timeout ran out.
pub(crate) fn try_again(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Forwards a worker's output stream to ours, one whole line per write; a last line without
/// a newline gets one, so it is not glued to someone else's output.
fn forward(from: impl Read + Send + 'static, to_stdout: bool) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("brigade-proc-output".into())
        .spawn(move || {
            let mut from = BufReader::with_capacity(64 * 1024, from);
            let mut line = Vec::new();
            loop {
                line.clear();
                match from.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if line.last() != Some(&b'\n') {
                            line.push(b'\n');
                        }
                        let _ = if to_stdout {
                            io::stdout().lock().write_all(&line)
                        } else {
                            io::stderr().lock().write_all(&line)
                        };
                    }
                }
            }
        })
}

/// Joins the output forwarders of a worker that is gone (bounded: a grandchild holding the
/// pipes must not stall the pool).
pub(crate) fn join_forwarders(forwarders: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + Duration::from_secs(1);
    for handle in forwarders {
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }
}

impl Shared {
    /// Starts one worker and takes it through the handshake.
    pub(crate) fn start_worker(&self) -> Result<LiveWorker, StartError> {
        let start = |e: io::Error| StartError::Start(e.to_string());
        let (mut socket, theirs) = UnixStream::pair().map_err(start)?;
        // Large frames move in as few writer/reader hand-offs as the system allows: with the
        // default ~200 KB buffer, a 512 MiB result takes thousands of them, and on a busy
        // machine each waits for the other process to be scheduled. (The kernel caps the size
        // at `net.core.wmem_max`; failing to raise it only costs speed.)
        for end in [socket.as_fd(), theirs.as_fd()] {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(end, SOCKET_BUFFER);
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(end, SOCKET_BUFFER);
        }
        let ledger = Ledger::create().map_err(start)?;
        let token = random_token();
        greet(&socket, &token, &ledger).map_err(start)?;
        let mut child = Command::new(&self.config.program)
            .arg(WORKER_ARG)
            .env(WORKER_ENV, hex(&token))
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StartError::Start(format!("{}: {e}", self.config.program.display())))?;
        let pid = child.id();
        let mut forwarders = Vec::with_capacity(2);
        let mut forwarding = Ok(());
        for (stream, to_stdout) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                true,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                false,
            ),
        ] {
            if let Some(stream) = stream {
                match forward(stream, to_stdout) {
                    Ok(handle) => forwarders.push(handle),
                    // Unforwarded output would fill its pipe and stall the worker.
                    Err(e) => forwarding = Err(e),
                }
            }
        }
        let mut worker = LiveWorker {
            child,
            pid,
            socket: socket.try_clone().map_err(start)?,
            frames: FrameReader::new(self.config.message_limit + wire::HEADER_ROOM),
            forwarders,
            ledger,
            stream: 0,
        };
        let handshake = forwarding
            .map_err(|e| StartError::Start(format!("cannot forward a worker's output: {e}")))
            .and_then(|()| self.handshake(&mut worker, &mut socket));
        match handshake {
            Ok(()) => Ok(worker),
            Err(e) => {
                let _ = worker.child.kill();
                let _ = worker.child.wait();
                Err(e)
            }
        }
    }

    fn handshake(
        &self,
        worker: &mut LiveWorker,
        socket: &mut UnixStream,
    ) -> Result<(), StartError> {
        // A start timeout too large for the clock is no limit.
        let deadline = Instant::now().checked_add(self.config.start_timeout);
        let pid = worker.pid;
        let no_answer = |what: &str| {
            StartError::Start(format!(
                "worker process {pid} {what} before finishing brigade's handshake; is {} a \
                 program that links this build of brigade?",
                self.config.program.display()
            ))
        };
        let next = |worker: &mut LiveWorker| -> Result<Vec<u8>, StartError> {
            loop {
                if let Some(range) = worker
                    .frames
                    .next_frame()
                    .map_err(|e| StartError::Start(e.to_string()))?
                {
                    return Ok(worker.frames.body(range).to_vec());
                }
                let left = match deadline {
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(no_answer(&format!(
                                "did not answer within {:?}",
                                self.config.start_timeout
                            )));
                        }
                        Some(left)
                    }
                    None => None,
                };
                worker
                    .socket
                    .set_read_timeout(left)
                    .map_err(|e| StartError::Start(e.to_string()))?;
                match worker.frames.read_from(&worker.socket) {
                    Ok(0) => {
                        let status = worker.child.wait().ok();
                        let how = status.map_or("vanished".into(), |s| format!("exited ({s})"));
                        return Err(no_answer(&how));
                    }
                    Ok(_) => {}
                    // A read timeout (the handshake's deadline is checked above) or a signal.
                    Err(e) if try_again(&e) => {}
                    Err(e) => return Err(StartError::Start(e.to_string())),
                }
            }
        };
        let hello = next(worker)?;
        match wire::decode_from_worker(&hello) {
            Ok(FromWorker::Hello {
                version, layout, ..
            }) if version == wire::VERSION && layout == call::layout_check() => {}
            Ok(FromWorker::Hello { .. }) => {
                return Err(StartError::Start(
                    "the worker process runs a different build of brigade".into(),
                ));
            }
            other => return Err(StartError::Start(format!("unexpected hello: {other:?}"))),
        }
        let mut init = FrameWriter::init(
            self.config.memory_limit.unwrap_or(0),
            self.config.message_limit as u64,
            self.config
                .initializer
                .as_ref()
                .map(|init| (init.trampoline, init.func)),
        );
        if let Some(initializer) = &self.config.initializer {
            init.payload().extend_from_slice(&initializer.payload);
        }
        let init = init
            .seal()
            .map_err(|e| StartError::Init(format!("its argument: {e}")))?;
        // Blocking is fine here: the worker reads until it has its init frame.
        wire::send_all(socket.as_fd(), &init).map_err(|e| StartError::Start(e.to_string()))?;
        worker.stream = init.len() as u64;
        let answer = next(worker)?;
        let result = match wire::decode_from_worker(&answer) {
            Ok(FromWorker::Ready) => Ok(()),
            Ok(FromWorker::InitFailed { message }) => Err(StartError::Init(message.to_owned())),
            other => Err(StartError::Start(format!(
                "unexpected answer to init: {other:?}"
            ))),
        };
        worker
            .socket
            .set_read_timeout(None)
            .map_err(|e| StartError::Start(e.to_string()))?;
        result
    }
}
