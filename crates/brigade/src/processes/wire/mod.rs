//! The wire between the pool and its worker processes: length-prefixed frames over a Unix
//! socket, each holding one message.
//!
//! A frame is a little-endian `u32` body length and a `u32` check of that length (the length
//! xor [`CHECK`]), then the body: a one-byte kind, the kind's fixed little-endian header
//! fields, then the rest of the frame as the kind's payload. The check catches bytes that are
//! not a frame (a task writing to the wrong descriptor, say) at the first header they spoil,
//! instead of reading them as a length and waiting for a body that never comes. The
//! payload of a call or a result is the postcard encoding of the value itself, written straight
//! into the frame buffer and decoded straight from it, so a large argument or result is copied
//! once into the frame and once out of it, never into an intermediate message. The fixed
//! headers are hand-laid out for the same reason: there is nothing to gain from a generic codec
//! for three integers, and the decoder stays small enough to reason about.
//!
//! Both sides decode everything that arrives as untrusted: a short, oversized or unknown frame
//! is a [`WireError`], never a panic, and a length is checked against the limit as soon as its
//! four bytes arrive; the buffer then grows with the bytes actually received, never with what
//! a length claims (property-tested below, and fuzzed: see `fuzz/` at the workspace root).

use std::fmt;
use std::io;
use std::os::fd::AsFd;

/// The version of this protocol; a worker of another build refuses to talk.
pub(crate) const VERSION: u32 = 3;

/// The largest encoded argument or result (the default, and the most a pool may allow).
pub(crate) const MAX_MESSAGE: usize = 1 << 31;

/// Room for a frame's kind and fixed header fields beside its payload.
pub(crate) const HEADER_ROOM: usize = 64;

/// Largest body accepted: a length above this is corruption, not a message.
pub(crate) const MAX_FRAME: usize = MAX_MESSAGE + HEADER_ROOM;

/// Length and check.
pub(super) const FRAME_HEADER: usize = 8;

/// What a frame's length is xor-ed with to make its check.
pub(super) const CHECK: u32 = 0xB816_ADE5;

const CALL: u8 = 1;
const INIT: u8 = 2;
const EXIT: u8 = 3;
const HELLO: u8 = 10;
const READY: u8 = 11;
const INIT_FAILED: u8 = 12;
const DONE: u8 = 13;
const RETIRING: u8 = 14;
const PULL: u8 = 15;

/// How a call went in the worker, as it travels back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The payload is the encoded result.
    Value = 0,
    /// The payload is the panic message.
    Panicked = 1,
    /// The payload is the codec's message (argument or result could not be (de)serialized).
    Codec = 2,
}

/// Messages from the pool to a worker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToWorker<'a> {
    /// Run `func` through `trampoline` (both offsets, see `call`) on `payload`.
    Call {
        id: u64,
        trampoline: i64,
        func: i64,
        payload: &'a [u8],
    },
    /// Start-up settings: the memory ceiling in bytes (0: none), the largest result to send
    /// back, and the initializer to run first (its trampoline's and function's offsets, and
    /// its encoded argument in `payload`), if any.
    Init {
        memory_limit: u64,
        message_limit: u64,
        initializer: Option<(i64, i64)>,
        payload: &'a [u8],
    },
    /// Finish: exit once this is read.
    Exit,
}

/// Messages from a worker to the pool.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromWorker<'a> {
    /// The first message: protocol version, pid, and the offset of a known function, which
    /// the pool compares with its own to confirm both run the same build.
    Hello { version: u32, pid: u32, layout: i64 },
    /// The initializer ran (or there was none); calls may come.
    Ready,
    /// The initializer panicked with this message; the worker exits.
    InitFailed { message: &'a str },
    /// A call finished.
    Done {
        id: u64,
        busy_nanos: u64,
        verdict: Verdict,
        payload: &'a [u8],
    },
    /// The worker passed its memory ceiling (`rss` bytes) after its last call and exits
    /// without running anything it has been sent since.
    Retiring { rss: u64 },
    /// The worker waits for the bytes of its stream up to `want` (counted from the first
    /// byte of the init frame): the rest of a frame the pool could not write whole without
    /// blocking (see `slot`).
    Pull { want: u64 },
}

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(pub(crate) String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

/// Builds one frame in a buffer: reserve the length, write the body, then seal.
pub(crate) struct FrameWriter {
    buf: Vec<u8>,
}

impl FrameWriter {
    fn start(kind: u8) -> Self {
        Self::start_in(Vec::with_capacity(64), kind)
    }

    /// Starts a frame in `buf` (cleared), reusing its memory.
    fn start_in(mut buf: Vec<u8>, kind: u8) -> Self {
        buf.clear();
        buf.extend_from_slice(&[0; FRAME_HEADER]);
        buf.push(kind);
        Self { buf }
    }

    fn u32(mut self, v: u32) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(mut self, v: u64) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn i64(self, v: i64) -> Self {
        self.u64(v as u64)
    }

    /// The buffer, for the payload to be appended (an encoder writes straight into it).
    pub(crate) fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes the body length; the frame is ready to send. Fails when it is too large.
    pub(crate) fn seal(mut self) -> Result<Vec<u8>, WireError> {
        let body = self.buf.len() - FRAME_HEADER;
        if body > MAX_FRAME {
            return Err(WireError(format!(
                "a {body}-byte message is over the limit"
            )));
        }
        self.buf[..4].copy_from_slice(&(body as u32).to_le_bytes());
        self.buf[4..8].copy_from_slice(&(body as u32 ^ CHECK).to_le_bytes());
        Ok(self.buf)
    }

    pub(crate) fn call(id: u64, trampoline: i64, func: i64) -> Self {
        Self::start(CALL).u64(id).i64(trampoline).i64(func)
    }

    /// An init frame; the caller appends the initializer's encoded argument.
    pub(crate) fn init(
        memory_limit: u64,
        message_limit: u64,
        initializer: Option<(i64, i64)>,
    ) -> Self {
        let (trampoline, func) = initializer.unwrap_or((0, 0));
        Self::start(INIT)
            .u64(memory_limit)
            .u64(message_limit)
            .u64(u64::from(initializer.is_some()))
            .i64(trampoline)
            .i64(func)
    }

    #[cfg(test)]
    pub(crate) fn exit() -> Self {
        Self::start(EXIT)
    }

    pub(crate) fn hello(pid: u32, layout: i64) -> Self {
        Self::start(HELLO).u32(VERSION).u32(pid).i64(layout)
    }

    pub(crate) fn ready() -> Self {
        Self::start(READY)
    }

    pub(crate) fn init_failed(message: &str) -> Self {
        let mut w = Self::start(INIT_FAILED);
        w.buf.extend_from_slice(message.as_bytes());
        w
    }

    /// A result frame; the caller appends the payload, then fills in the call's time and
    /// verdict with [`set_done`](Self::set_done).
    #[cfg(test)]
    pub(crate) fn done(id: u64) -> Self {
        Self::done_in(Vec::new(), id)
    }

    /// A [`done`](Self::done) frame built in `buf`, reusing its memory.
    pub(crate) fn done_in(buf: Vec<u8>, id: u64) -> Self {
        let mut w = Self::start_in(buf, DONE).u64(id).u64(0);
        w.buf.push(Verdict::Value as u8);
        w
    }

    /// Fills in a [`done`](Self::done) frame's time and verdict.
    pub(crate) fn set_done(&mut self, busy_nanos: u64, verdict: Verdict) {
        // Frame header, kind (1), id (8), then the time and the verdict.
        const BUSY: usize = FRAME_HEADER + 9;
        self.buf[BUSY..BUSY + 8].copy_from_slice(&busy_nanos.to_le_bytes());
        self.buf[BUSY + 8] = verdict as u8;
    }

    pub(crate) fn retiring(rss: u64) -> Self {
        Self::start(RETIRING).u64(rss)
    }

    pub(crate) fn pull(want: u64) -> Self {
        Self::start(PULL).u64(want)
    }
}

/// The exit frame, whole: written from a constant, so telling a worker to exit allocates
/// nothing and can be queued behind unwritten frames (see `slot`).
pub(crate) const EXIT_FRAME: [u8; FRAME_HEADER + 1] = {
    let len = 1u32.to_le_bytes();
    let check = (1u32 ^ CHECK).to_le_bytes();
    [
        len[0], len[1], len[2], len[3], check[0], check[1], check[2], check[3], EXIT,
    ]
};

/// The id of a sealed call frame (see [`FrameWriter::call`]).
pub(crate) fn frame_call_id(frame: &[u8]) -> u64 {
    const ID: usize = FRAME_HEADER + 1;
    u64::from_le_bytes(
        frame[ID..ID + 8]
            .try_into()
            .expect("a call frame has an id"),
    )
}

/// Reads the fixed fields of a body, failing instead of panicking when it is short.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WireError> {
        if self.rest.len() < N {
            return Err(WireError(format!("truncated {what}")));
        }
        let (head, rest) = self.rest.split_at(N);
        self.rest = rest;
        Ok(head.try_into().expect("split at N"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.take::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, WireError> {
        Ok(self.u64(what)? as i64)
    }

    fn end(self, what: &str) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError(format!(
                "{} stray bytes after {what}",
                self.rest.len()
            )))
        }
    }
}

fn split_kind(body: &[u8]) -> Result<(u8, Fields<'_>), WireError> {
    match body.split_first() {
        Some((&kind, rest)) => Ok((kind, Fields { rest })),
        None => Err(WireError("empty message".into())),
    }
}

/// Decodes a frame body sent to a worker.
pub(crate) fn decode_to_worker(body: &[u8]) -> Result<ToWorker<'_>, WireError> {
    let (kind, mut f) = split_kind(body)?;
    match kind {
        CALL => Ok(ToWorker::Call {
            id: f.u64("call id")?,
            trampoline: f.i64("call trampoline")?,
            func: f.i64("call function")?,
            payload: f.rest,
        }),
        INIT => {
            let memory_limit = f.u64("memory limit")?;
            let message_limit = f.u64("message limit")?;
            let has = f.u64("init flag")?;
            let trampoline = f.i64("init trampoline")?;
            let func = f.i64("init function")?;
            let initializer = match has {
                0 => None,
                1 => Some((trampoline, func)),
                other => return Err(WireError(format!("init flag {other}"))),
            };
            Ok(ToWorker::Init {
                memory_limit,
                message_limit,
                initializer,
                payload: f.rest,
            })
        }
        EXIT => f.end("exit").map(|()| ToWorker::Exit),
        other => Err(WireError(format!(
            "unknown message kind {other} for a worker"
        ))),
    }
}

/// Decodes a frame body sent by a worker.
pub(crate) fn decode_from_worker(body: &[u8]) -> Result<FromWorker<'_>, WireError> {
    let (kind, mut f) = split_kind(body)?;
    match kind {
        HELLO => {
            let hello = FromWorker::Hello {
                version: f.u32("hello version")?,
                pid: f.u32("hello pid")?,
                layout: f.i64("hello layout")?,
            };
            f.end("hello")?;
            Ok(hello)
        }
        READY => f.end("ready").map(|()| FromWorker::Ready),
        INIT_FAILED => std::str::from_utf8(f.rest)
            .map(|message| FromWorker::InitFailed { message })
            .map_err(|_| WireError("initializer message is not UTF-8".into())),
        DONE => {
            let id = f.u64("result id")?;
            let busy_nanos = f.u64("result time")?;
            let verdict = match f.u8("result verdict")? {
                0 => Verdict::Value,
                1 => Verdict::Panicked,
                2 => Verdict::Codec,
                other => return Err(WireError(format!("result verdict {other}"))),
            };
            Ok(FromWorker::Done {
                id,
                busy_nanos,
                verdict,
                payload: f.rest,
            })
        }
        RETIRING => {
            let rss = f.u64("retiring rss")?;
            f.end("retiring")?;
            Ok(FromWorker::Retiring { rss })
        }
        PULL => {
            let want = f.u64("pull offset")?;
            f.end("pull")?;
            Ok(FromWorker::Pull { want })
        }
        other => Err(WireError(format!(
            "unknown message kind {other} from a worker"
        ))),
    }
}

/// Writes a whole frame without raising `SIGPIPE` if the other side is gone. Blocks while the
/// socket is full: only for a peer known to be reading (a worker's answers, which the pool
/// always reads; the handshake).
pub(crate) fn send_all(socket: impl AsFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::net::send(&socket, bytes, rustix::net::SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes what the socket takes now of `slices`, in order, in one system call; returns how
/// many bytes that was (0 when the socket is full). Never blocks, never raises `SIGPIPE`.
pub(crate) fn send_some(socket: impl AsFd, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
    let flags = rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT;
    loop {
        let sent = rustix::net::sendmsg(
            &socket,
            slices,
            &mut rustix::net::SendAncillaryBuffer::default(),
            flags,
        );
        match sent {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::AGAIN) => return Ok(0),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits up to `wait` for `socket` to have something to read (or to fail); false when
/// nothing came.
pub(crate) fn readable_within(socket: &impl AsFd, wait: std::time::Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        socket,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: wait.subsec_nanos().into(),
    };
    !matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(0))
}

mod reader;

pub(crate) use reader::FrameReader;
#[cfg(any(test, fuzzing))]
pub(crate) use reader::exercise_reader;

#[cfg(all(test, not(brigade_loom)))]
mod tests;
