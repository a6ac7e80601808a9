//! Worker mode: what a worker process runs instead of its `main`.
//!
//! Every program that links brigade carries a constructor (run by the loader before `main`)
//! that looks for [`WORKER_ENV`]. In an ordinary start it is absent and the constructor
//! returns at once. A process becomes a worker only when the variable's token is also waiting
//! in its standard input, and that standard input is a socket: the pool writes the token
//! (with the worker's [ledger](super::ledger) beside it) into the socket *before* it starts
//! the process, so only a pool can produce the pair. A stray variable (inherited from a
//! shell, say) is removed and otherwise ignored, and the program runs its `main` as usual,
//! its standard input untouched (the token is only peeked at, never read, unless it matches).
//!
//! That is why a pool needs no setup line in `main`, and works the same from a binary, an
//! example, an integration test or a doc test.
//!
//! The main thread reads the socket, runs calls one at a time, in the order they arrived, and
//! answers each: a call costs the worker at most one wake-up, the read that brings it (the
//! pool never waits for the worker to make room, see
//! [`slot`](super::slot#writing-without-blocking)), and none when a sequential caller's
//! next call comes while the worker still polls for it (see [`spin`](super::spin)).
//! Every call runs on that same thread, the initializer's, so what an initializer leaves in
//! thread-local state is there for the tasks, and a library that must stay on one thread can.
//! A second thread only watches the socket for the pool going away (it is not woken by
//! calls), and ends the process the moment that happens, even in the middle of a call: the
//! pool's process has exited, or was killed, and a worker must not outlive it.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags};

use super::call::{self, InitTrampoline, Trampoline};
use super::ledger::Ledger;
use super::panics;
use super::spare::{IDLE_RELEASE, SPARE_MIN};
use super::spin::{Gate, SPIN_FOR};
use super::wire::{self, FrameReader, FrameWriter, ToWorker, readable_within};

/// Present in a worker's environment (and removed before anything else runs); its value is the
/// token the pool wrote into the worker's socket, in hex.
pub(crate) const WORKER_ENV: &str = "BRIGADE_PROCESS_WORKER";

/// The argument a worker is started with. Never read by brigade: it is there so that a
/// program in which worker mode somehow did not start (it would then run its own `main`)
/// most likely stops at once on an unknown flag, instead of doing the parent's job again.
pub(crate) const WORKER_ARG: &str = "--brigade-process-worker";

/// Bytes in the token.
pub(crate) const TOKEN_LEN: usize = 16;

/// Exit code of a worker that could not set itself up.
const SETUP_FAILED: i32 = 111;

#[ctor::ctor(unsafe)]
fn worker_entry() {
    let Some(token) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // SAFETY: constructors run before `main`, on the only thread of the process, so nothing
    // reads the environment concurrently. Removing the variable keeps processes that a task
    // starts (and programs that merely inherited a stray variable) from acting on it again.
    unsafe { std::env::remove_var(WORKER_ENV) };
    let Some((socket, ledger)) = accept_greeting(&token) else {
        return;
    };
    let code = match serve(socket, ledger) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("brigade worker {}: {e}", std::process::id());
            SETUP_FAILED
        }
    };
    let _ = io::stdout().flush();
    std::process::exit(code);
}

/// Referenced by the pool so the linker keeps the constructor's object file in every program
/// that uses a pool (a constructor alone is not a reason to link an object from a library).
pub(crate) fn keep_linked() {
    std::hint::black_box(worker_entry as fn());
}

/// Parses the token from the variable's hex.
fn parse_token(hex: &OsStr) -> Option<[u8; TOKEN_LEN]> {
    let hex = hex.to_str()?.as_bytes();
    if hex.len() != 2 * TOKEN_LEN {
        return None;
    }
    let mut token = [0u8; TOKEN_LEN];
    for (byte, pair) in token.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(token)
}

/// The pool's handshake: the token waiting in standard input, a socket, with the ledger.
/// Takes the socket out of standard input (which becomes `/dev/null` for the tasks), or returns
/// `None`, having consumed nothing, when this process was not started by a pool.
fn accept_greeting(hex: &OsStr) -> Option<(UnixStream, Ledger)> {
    let token = parse_token(hex)?;
    let stdin = io::stdin();
    let stdin = stdin.as_fd();
    let stat = rustix::fs::fstat(stdin).ok()?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return None;
    }
    let mut seen = [0u8; TOKEN_LEN];
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    match rustix::net::recv(stdin, &mut seen, flags) {
        Ok((_, TOKEN_LEN)) if seen == token => {}
        _ => return None,
    }
    // It is ours: take the token for real, with the ledger sent beside it. From here on this
    // process is a worker, and a failure is a worker's setup failure, not a reason to run
    // `main`.
    match take_greeting(stdin) {
        Ok(taken) => Some(taken),
        Err(e) => {
            eprintln!("brigade worker {}: {e}", std::process::id());
            std::process::exit(SETUP_FAILED);
        }
    }
}

fn take_greeting(stdin: std::os::fd::BorrowedFd<'_>) -> io::Result<(UnixStream, Ledger)> {
    let mut token = [0u8; TOKEN_LEN];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(&mut token)];
    rustix::net::recvmsg(
        stdin,
        &mut iov,
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut ledger = None;
    for message in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                ledger.get_or_insert(fd);
            }
        }
    }
    let ledger = ledger.ok_or_else(|| protocol("the greeting came without a ledger".into()))?;
    let ledger = Ledger::from_fd(ledger)?;
    // Tasks get an empty standard input; the socket moves to a descriptor they do not inherit.
    let socket: OwnedFd = rustix::io::fcntl_dupfd_cloexec(stdin, 3)?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok((UnixStream::from(socket), ledger))
}

/// The worker's end of the socket, and what it has read of it.
///
/// On a VM, faulting in fresh pages costs more than copying into warm ones, so back-to-back
/// large messages reuse the buffers of the previous ones: the read buffer here, and the
/// buffer the answers are written in. Both are let go after [`IDLE_RELEASE`] without calls,
/// and left out of the memory ceiling's count.
struct Link {
    socket: UnixStream,
    frames: FrameReader,
    /// The byte of the stream the last pull asked for.
    pulled: u64,
    /// Whether to poll for the next call before blocking.
    gate: Gate,
    /// Frames handed out since the last wait for the socket.
    taken: usize,
    /// The last call took less time than a poll lasts.
    quick: bool,
}

impl Link {
    /// The next frame, as a range of `frames`' buffer; `None` once the pool is gone.
    fn next(&mut self, answers: &mut Vec<u8>) -> io::Result<Option<Range<usize>>> {
        loop {
            if let Some(range) = self
                .frames
                .next_frame()
                .map_err(|e| protocol(e.to_string()))?
            {
                self.taken += 1;
                return Ok(Some(range));
            }
            if let Some(want) = self.frames.wanted() {
                if want > self.pulled {
                    // Part of a frame: the rest may be here already. If not, the pool may be
                    // holding it until asked (see `slot`).
                    match self.frames.read_now(&self.socket) {
                        Ok(Some(0)) | Err(_) => return Ok(None),
                        Ok(Some(_)) => continue,
                        Ok(None) => {
                            send(&mut self.socket, FrameWriter::pull(want))?;
                            self.pulled = want;
                        }
                    }
                }
            } else if self.frames.capacity() + answers.capacity() > SPARE_MIN
                && !readable_within(&self.socket, IDLE_RELEASE)
            {
                self.frames.release();
                *answers = Vec::new();
            }
            // Between calls (no part of a frame held), poll a while first when calls are
            // quick and come one per wait: a sequential caller's next call is usually
            // microseconds away, and waking from sleep costs more (see `spin`). Calls that
            // came several per read are pipelined: the pool sends more as answers reach it,
            // and a poller here would take the core its slot thread and the submitter need.
            // After a long call (large payloads, `cpu-fanout`) the pool has the next one on
            // its way already, and polling would only take the core from the slot thread
            // that writes it.
            let one_by_one = self.frames.wanted().is_none() && self.taken <= 1 && self.quick;
            self.taken = 0;
            let socket = &self.socket;
            match self.gate.wait(
                &mut self.frames,
                one_by_one,
                |frames| frames.read_now(socket),
                |frames| frames.read_from(socket),
            ) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The pool's end is broken: as good as gone.
                Err(_) => return Ok(None),
            }
        }
    }
}

fn serve(socket: UnixStream, ledger: Ledger) -> io::Result<()> {
    panics::install_hook();
    let watched = socket.try_clone()?;
    std::thread::Builder::new()
        .name("brigade-worker-watch".into())
        .spawn(move || watch(watched))?;
    let mut link = Link {
        socket,
        frames: FrameReader::new(wire::MAX_FRAME),
        pulled: 0,
        gate: Gate::default(),
        taken: 0,
        quick: false,
    };
    let mut answers = Vec::new();

    let hello = FrameWriter::hello(std::process::id(), call::layout_check());
    send(&mut link.socket, hello)?;
    let Some(range) = link.next(&mut answers)? else {
        return Ok(());
    };
    let (memory_limit, message_limit) = match wire::decode_to_worker(link.frames.body(range)) {
        Ok(ToWorker::Init {
            memory_limit,
            message_limit,
            initializer,
            payload,
        }) => {
            if let Some((trampoline, func)) = initializer {
                // SAFETY: the pool names only initializer trampolines it instantiated
                // (`call::init_with`, `call::init_plain`) in the same build (see `call`).
                let init = unsafe {
                    std::mem::transmute::<usize, InitTrampoline>(call::address_of(trampoline))
                };
                // SAFETY: the builder paired `func` with this very trampoline, for its type,
                // after checking that it lies in the executable (see `call::init_with`).
                if let Err(message) = unsafe { init(call::address_of(func), payload) } {
                    send(&mut link.socket, FrameWriter::init_failed(&message))?;
                    return Ok(());
                }
            }
            (
                memory_limit,
                usize::try_from(message_limit).unwrap_or(usize::MAX),
            )
        }
        Ok(other) => return Err(protocol(format!("expected init, got {other:?}"))),
        Err(e) => return Err(protocol(e.to_string())),
    };
    send(&mut link.socket, FrameWriter::ready())?;

    loop {
        let Some(range) = link.next(&mut answers)? else {
            return Ok(());
        };
        match wire::decode_to_worker(link.frames.body(range)) {
            Ok(ToWorker::Call {
                id,
                trampoline,
                func,
                payload,
            }) => {
                // Before any code of the call runs: from here on, a death fails this call.
                ledger.record(id);
                // SAFETY: the pool names only trampolines it instantiated (`call_one`,
                // `call_chunk`), in the same build (see `call`).
                let trampoline = unsafe {
                    std::mem::transmute::<usize, Trampoline>(call::address_of(trampoline))
                };
                let started = Instant::now();
                let mut done = FrameWriter::done_in(std::mem::take(&mut answers), id);
                // SAFETY: the pool paired `func` with this very trampoline, instantiated for
                // its type, after checking that it lies in the executable
                // (`call::check_in_executable`); this is the same build.
                let verdict = unsafe {
                    trampoline(
                        call::address_of(func),
                        payload,
                        done.payload(),
                        message_limit,
                    )
                };
                let busy = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
                link.quick = busy <= SPIN_FOR.as_nanos() as u64;
                done.set_done(busy, verdict);
                // Whatever the task printed goes out before its result: a task's output is
                // never lost to a crash of a later task.
                let _ = io::stdout().flush();
                let sealed = done.seal().map_err(|e| protocol(e.to_string()))?;
                // Blocking is fine: the pool's slot thread reads answers whatever it does.
                wire::send_all(&link.socket, &sealed)?;
                answers = sealed;
                if memory_limit > 0 {
                    let held = answers.capacity() + link.frames.capacity();
                    let rss = resident_bytes();
                    if rss.saturating_sub(held as u64) > memory_limit {
                        send(&mut link.socket, FrameWriter::retiring(rss))?;
                        return Ok(());
                    }
                }
            }
            Ok(ToWorker::Exit) => return Ok(()),
            Ok(other) => return Err(protocol(format!("unexpected {other:?}"))),
            Err(e) => return Err(protocol(e.to_string())),
        }
    }
}

fn protocol(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn send(socket: &mut UnixStream, frame: FrameWriter) -> io::Result<()> {
    let frame = frame.seal().map_err(|e| protocol(e.to_string()))?;
    wire::send_all(socket, &frame)
}

/// Waits for the pool's end of the socket to close, then ends the process. Asks the kernel
/// only about the hang-up, so the calls and answers going through the socket never wake it.
fn watch(socket: UnixStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let hang_up = PollFlags::RDHUP;
    // Elsewhere, the hang-up that poll always reports.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let hang_up = PollFlags::empty();
    loop {
        let mut fds = [PollFd::new(&socket, hang_up)];
        match rustix::event::poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => {}
            Ok(0) => {}
            // Hung up, or the socket failed: the pool is gone (or closed the pool). Nothing
            // more will come and no one waits for an answer. Stop now, even in the middle of
            // a call.
            Ok(_) | Err(_) => break,
        }
    }
    let _ = io::stdout().flush();
    std::process::exit(0);
}

/// The worker's resident memory, from `/proc/self/statm` (0 when unreadable).
fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_token_parses() {
        let hex = "00112233445566778899aabbccddeeff";
        assert_eq!(
            parse_token(OsStr::new(hex)),
            Some([
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ])
        );
        for bad in [
            "",
            "1",
            "2",
            "zz112233445566778899aabbccddeeff",
            &format!("{hex}00"),
        ] {
            assert_eq!(parse_token(OsStr::new(bad)), None, "{bad:?}");
        }
    }
}
