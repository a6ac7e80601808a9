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
use std::ops::Range;
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
const FRAME_HEADER: usize = 8;

/// What a frame's length is xor-ed with to make its check.
const CHECK: u32 = 0xB816_ADE5;

/// What a reader asks of the socket at least, per read.
const READ_CHUNK: usize = 64 * 1024;

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

/// Splits a byte stream into frame bodies. Bytes are appended as they are read; complete
/// frames are handed out as ranges of the internal buffer.
///
/// Reads go straight into the buffer's spare capacity (never zeroed first), and the buffer
/// grows by what is missing of the current frame but at most by what has already arrived of
/// it: a large frame costs a logarithmic number of growths (linear time overall), and a length
/// that lies costs at most twice what was really sent.
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    /// Start of the first byte not yet handed out.
    start: usize,
    /// The largest body accepted.
    limit: usize,
    /// Bytes of the stream handed out as frames so far (headers included): where the frame
    /// being read starts in the stream.
    consumed: u64,
}

impl FrameReader {
    /// A reader that refuses bodies over `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            limit: limit.min(u32::MAX as usize),
            consumed: 0,
        }
    }

    /// Reads once from `fd` into the buffer; `Ok(0)` at end of stream (a peer that went away
    /// leaving bytes unread, which resets the connection, included).
    pub(crate) fn read_from(&mut self, fd: impl AsFd) -> io::Result<usize> {
        self.make_room();
        match rustix::io::read(fd, rustix::buffer::spare_capacity(&mut self.buf)) {
            Ok(n) => Ok(n),
            Err(rustix::io::Errno::CONNRESET) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads what has arrived on the socket `fd` without waiting: `Ok(None)` when nothing has.
    pub(crate) fn read_now(&mut self, fd: impl AsFd) -> io::Result<Option<usize>> {
        self.make_room();
        let flags = rustix::net::RecvFlags::DONTWAIT;
        match rustix::net::recv(fd, rustix::buffer::spare_capacity(&mut self.buf), flags) {
            Ok((n, _)) => Ok(Some(n)),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(rustix::io::Errno::CONNRESET) => Ok(Some(0)),
            Err(e) => Err(e.into()),
        }
    }

    /// Where in the stream the frame being read ends (or its header, while that is
    /// incomplete): what a reader that has part of a frame waits for. `None` when no part of a
    /// frame is waiting, or its header is refused (which [`next_frame`](Self::next_frame)
    /// reports).
    pub(crate) fn wanted(&self) -> Option<u64> {
        let have = self.buf.len() - self.start;
        if have == 0 {
            return None;
        }
        let frame = match self.header() {
            None => FRAME_HEADER,
            Some(Ok(len)) => FRAME_HEADER + len,
            Some(Err(_)) => return None,
        };
        Some(self.consumed + frame as u64)
    }

    /// Lets go of the buffer's memory when no part of a frame is in it.
    pub(crate) fn release(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Takes bytes as one read would (as many as the room made for a read holds); returns how
    /// many it took. For tests and the fuzzer, which have bytes instead of a socket.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn push(&mut self, bytes: &[u8]) -> usize {
        self.make_room();
        let took = bytes.len().min(self.buf.capacity() - self.buf.len());
        self.buf.extend_from_slice(&bytes[..took]);
        took
    }

    /// Makes room for the next read (see the type's docs).
    fn make_room(&mut self) {
        if self.start == self.buf.len() {
            // Everything was consumed: start over at the front instead of growing.
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.capacity() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK {
            let have = self.buf.len() - self.start;
            self.buf
                .reserve_exact(self.missing().min(have).max(READ_CHUNK));
            super::spare::advise_huge(self.buf.as_ptr(), self.buf.capacity());
        }
    }

    /// How many more bytes the frame being read needs (`READ_CHUNK` when its length is not
    /// known yet, or is about to be refused).
    fn missing(&self) -> usize {
        match self.header() {
            Some(Ok(len)) => (FRAME_HEADER + len).saturating_sub(self.buf.len() - self.start),
            _ => READ_CHUNK,
        }
    }

    /// The length of the frame being read, once its header has arrived: checked, and against
    /// the limit.
    fn header(&self) -> Option<Result<usize, WireError>> {
        let header = self.buf[self.start..].first_chunk::<FRAME_HEADER>()?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let check = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        Some(if len ^ CHECK != check {
            Err(WireError(
                "a frame header that does not check out (bytes that are not a frame)".into(),
            ))
        } else if len as usize > self.limit {
            Err(WireError(format!(
                "a frame of {len} bytes is over the limit of {} bytes",
                self.limit
            )))
        } else {
            Ok(len as usize)
        })
    }

    /// The next complete frame's body, if one has fully arrived.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Range<usize>>, WireError> {
        let Some(len) = self.header() else {
            return Ok(None);
        };
        let len = len?;
        if self.buf.len() - self.start < FRAME_HEADER + len {
            return Ok(None);
        }
        let body = self.start + FRAME_HEADER..self.start + FRAME_HEADER + len;
        self.start = body.end;
        self.consumed += (FRAME_HEADER + len) as u64;
        Ok(Some(body))
    }

    /// The bytes of a frame returned by [`next_frame`](Self::next_frame).
    pub(crate) fn body(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Bytes read but not yet returned as frames (a truncated frame at end of stream).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The buffer's capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Feeds `bytes` to a reader in reads of the sizes `chunks` gives (cycled; 0 is taken as 1)
/// and decodes every frame that comes out as both directions' messages. Checks the reader's
/// promises as it goes: it never holds more than twice the bytes it was given plus a read's
/// worth, and it never stalls while bytes are left (every read takes at least one byte).
/// Returns the frames' bodies, or the first framing error. The property tests and the fuzzer
/// both run this.
#[cfg(any(test, fuzzing))]
pub(crate) fn exercise_reader(
    bytes: &[u8],
    chunks: &[usize],
    limit: usize,
) -> Result<Vec<Vec<u8>>, WireError> {
    let chunks = if chunks.is_empty() {
        &[READ_CHUNK][..]
    } else {
        chunks
    };
    let mut reader = FrameReader::new(limit);
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut given = 0usize;
    for &chunk in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let piece = &rest[..chunk.clamp(1, rest.len())];
        let took = reader.push(piece);
        assert!(took > 0, "the reader made no room for a read");
        rest = &rest[took..];
        given += took;
        assert!(
            reader.capacity() <= 2 * given + 2 * READ_CHUNK,
            "{} bytes of buffer for {given} bytes received",
            reader.capacity()
        );
        while let Some(range) = reader.next_frame()? {
            let body = reader.body(range);
            let _ = decode_to_worker(body);
            let _ = decode_from_worker(body);
            out.push(body.to_vec());
        }
        if let Some(want) = reader.wanted() {
            assert!(
                want > given as u64,
                "a reader holding part of a frame wants byte {want}, but has {given}"
            );
        }
    }
    Ok(out)
}

#[cfg(all(test, not(brigade_loom)))]
mod tests;
