//! Worker mode: what a worker process runs instead of its `main`.
//!
//! Every program that links brigade carries a constructor (run by the loader before `main`)
//! that looks for [`WORKER_ENV`]. In an ordinary start it is absent and the constructor
//! returns at once; in a process started by a pool it is present, and the constructor serves
//! the pool and exits, so the program's `main` never runs there. That is why a pool needs no
//! setup line in `main`, and works the same from a binary, an example, an integration test
//! or a doc test.
//!
//! The worker has two threads. A reader moves frames from the socket into a queue, so that
//! the pool's writes always drain even while a long call runs (the pool may then send the
//! next calls without waiting), and it ends the process the moment the socket closes: the
//! pool's process has exited, or was killed, and a worker must not outlive it. The main thread
//! runs calls one at a time, in the order they arrived, and answers each.

use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Instant;

use super::call::{self, Trampoline};
use super::wire::{self, FrameReader, FrameWriter, ToWorker};

/// Present in a worker's environment (and removed before any task runs); its value is the
/// protocol version the pool speaks.
pub(crate) const WORKER_ENV: &str = "BRIGADE_PROCESS_WORKER";

/// The argument a worker is started with. Never read by brigade: it is there so that a
/// program in which worker mode somehow did not start (it would then run its own `main`)
/// most likely stops at once on an unknown flag, instead of doing the parent's job again.
pub(crate) const WORKER_ARG: &str = "--brigade-process-worker";

/// Exit code of a worker that could not set itself up.
const SETUP_FAILED: i32 = 111;

#[ctor::ctor(unsafe)]
fn worker_entry() {
    if std::env::var_os(WORKER_ENV).is_none() {
        return;
    }
    // SAFETY: constructors run before `main`, on the only thread of the process, so nothing
    // reads the environment concurrently. Removing the variable keeps processes that a task
    // starts from turning into workers themselves.
    unsafe { std::env::remove_var(WORKER_ENV) };
    let code = match serve() {
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

/// Takes the pool's socket from standard input, and gives the worker's tasks an empty
/// standard input instead.
fn take_socket() -> io::Result<UnixStream> {
    let socket: OwnedFd = rustix::io::fcntl_dupfd_cloexec(io::stdin().as_fd(), 3)?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(UnixStream::from(socket))
}

fn serve() -> io::Result<()> {
    let mut socket = take_socket()?;
    let reader_socket = socket.try_clone()?;
    let (frames, inbox) = mpsc::channel::<(Vec<u8>, Range<usize>)>();
    std::thread::Builder::new()
        .name("brigade-worker-reader".into())
        .spawn(move || read_frames(reader_socket, frames))?;

    let hello = FrameWriter::hello(std::process::id(), call::layout_check());
    send(&mut socket, hello)?;
    let Ok((first, range)) = inbox.recv() else {
        return Ok(());
    };
    let memory_limit = match wire::decode_to_worker(&first[range]) {
        Ok(ToWorker::Init {
            initializer,
            memory_limit,
        }) => {
            if let Some(offset) = initializer {
                // SAFETY: the pool names only a `fn()` it was given as the initializer, and the
                // worker runs the same build (see `call`).
                let init = unsafe {
                    std::mem::transmute::<usize, call::Initializer>(call::address_of(offset))
                };
                if let Err(panic) = std::panic::catch_unwind(init) {
                    let message = match crate::Error::from_panic(&*panic) {
                        crate::Error::Panicked { message } => message,
                        other => other.to_string(),
                    };
                    send(&mut socket, FrameWriter::init_failed(&message))?;
                    return Ok(());
                }
            }
            memory_limit
        }
        Ok(other) => return Err(protocol(format!("expected init, got {other:?}"))),
        Err(e) => return Err(protocol(e.to_string())),
    };
    send(&mut socket, FrameWriter::ready())?;

    let mut out = Vec::new();
    for (frame, range) in inbox {
        match wire::decode_to_worker(&frame[range]) {
            Ok(ToWorker::Call {
                id,
                trampoline,
                func,
                payload,
            }) => {
                // SAFETY: the pool names only trampolines it instantiated (`call_one`,
                // `call_chunk`), in the same build (see `call`).
                let trampoline = unsafe {
                    std::mem::transmute::<usize, Trampoline>(call::address_of(trampoline))
                };
                let started = Instant::now();
                out.clear();
                let status = trampoline(call::address_of(func), payload, &mut out);
                let busy = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
                let mut done = FrameWriter::done(id, busy, status);
                done.payload().extend_from_slice(&out);
                // Whatever the task printed goes out before its result: a task's output is
                // never lost to a crash of a later task.
                let _ = io::stdout().flush();
                send(&mut socket, done)?;
                if memory_limit > 0 {
                    let rss = resident_bytes();
                    if rss > memory_limit {
                        send(&mut socket, FrameWriter::retiring(rss))?;
                        return Ok(());
                    }
                }
            }
            Ok(ToWorker::Exit) => return Ok(()),
            Ok(other) => return Err(protocol(format!("unexpected {other:?}"))),
            Err(e) => return Err(protocol(e.to_string())),
        }
    }
    Ok(())
}

fn protocol(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn send(socket: &mut UnixStream, frame: FrameWriter) -> io::Result<()> {
    let frame = frame.seal().map_err(|e| protocol(e.to_string()))?;
    socket.write_all(&frame)
}

/// Moves frames from the socket to the main thread; ends the process when the socket closes.
fn read_frames(mut socket: UnixStream, frames: mpsc::Sender<(Vec<u8>, Range<usize>)>) {
    let mut reader = FrameReader::default();
    loop {
        let want = reader.wanted().max(64 * 1024);
        let spare = reader.spare(want);
        let got = match socket.read(spare) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                reader.filled(want, 0);
                continue;
            }
            Err(_) => 0,
        };
        reader.filled(want, got);
        if got == 0 {
            // The pool's process is gone (or closed the pool): nothing more will come and no
            // one waits for an answer. Stop now, even in the middle of a call.
            let _ = io::stdout().flush();
            std::process::exit(0);
        }
        loop {
            match reader.next_frame() {
                Ok(Some(range)) => {
                    if frames.send(reader.take_body(range)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("brigade worker {}: {e}", std::process::id());
                    std::process::exit(SETUP_FAILED);
                }
            }
        }
    }
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
