//! The wire between the pool and its worker processes: length-prefixed frames over a Unix
//! socket, each holding one message.
//!
//! A frame is a little-endian `u32` body length, then the body: a one-byte kind, the kind's
//! fixed little-endian header fields, then the rest of the frame as the kind's payload. The
//! payload of a call or a result is the postcard encoding of the value itself, written straight
//! into the frame buffer and decoded straight from it, so a large argument or result is copied
//! once into the frame and once out of it, never into an intermediate message. The fixed
//! headers are hand-laid out for the same reason: there is nothing to gain from a generic codec
//! for three integers, and the decoder stays small enough to reason about.
//!
//! Both sides decode everything that arrives as untrusted: a short, oversized or unknown frame
//! is a [`WireError`], never a panic (property-tested below).

use std::fmt;
use std::ops::Range;

/// The version of this protocol; a worker of another build refuses to talk.
pub(crate) const VERSION: u32 = 1;

/// Largest body accepted: a length above this is corruption, not a message (it would otherwise
/// make the reader allocate whatever a garbled length says).
pub(crate) const MAX_FRAME: usize = 1 << 31;

const CALL: u8 = 1;
const INIT: u8 = 2;
const EXIT: u8 = 3;
const HELLO: u8 = 10;
const READY: u8 = 11;
const INIT_FAILED: u8 = 12;
const DONE: u8 = 13;
const RETIRING: u8 = 14;

/// How a call went in the worker, as it travels back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// The payload is the encoded result.
    Ok = 0,
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
    /// Start-up settings: the initializer to run first (offset, or none), and the memory
    /// ceiling in bytes (0: none).
    Init {
        initializer: Option<i64>,
        memory_limit: u64,
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
        status: Status,
        payload: &'a [u8],
    },
    /// The worker passed its memory ceiling (`rss` bytes) after its last call and exits
    /// without running anything it has been sent since.
    Retiring { rss: u64 },
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
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
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
        let body = self.buf.len() - 4;
        if body > MAX_FRAME {
            return Err(WireError(format!(
                "a {body}-byte message is over the limit"
            )));
        }
        self.buf[..4].copy_from_slice(&(body as u32).to_le_bytes());
        Ok(self.buf)
    }

    pub(crate) fn call(id: u64, trampoline: i64, func: i64) -> Self {
        Self::start(CALL).u64(id).i64(trampoline).i64(func)
    }

    pub(crate) fn init(initializer: Option<i64>, memory_limit: u64) -> Self {
        Self::start(INIT)
            .u64(u64::from(initializer.is_some()))
            .i64(initializer.unwrap_or(0))
            .u64(memory_limit)
    }

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

    /// A result frame; the caller appends the payload.
    pub(crate) fn done(id: u64, busy_nanos: u64, status: Status) -> Self {
        let mut w = Self::start(DONE).u64(id).u64(busy_nanos);
        w.buf.push(status as u8);
        w
    }

    pub(crate) fn retiring(rss: u64) -> Self {
        Self::start(RETIRING).u64(rss)
    }
}

/// The id of a sealed call frame (see [`FrameWriter::call`]).
pub(crate) fn frame_call_id(frame: &[u8]) -> u64 {
    u64::from_le_bytes(frame[5..13].try_into().expect("a call frame has an id"))
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
            let has = f.u64("init flag")?;
            let initializer = f.i64("init function")?;
            let memory_limit = f.u64("memory limit")?;
            f.end("init")?;
            let initializer = match has {
                0 => None,
                1 => Some(initializer),
                other => return Err(WireError(format!("init flag {other}"))),
            };
            Ok(ToWorker::Init {
                initializer,
                memory_limit,
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
            let status = match f.u8("result status")? {
                0 => Status::Ok,
                1 => Status::Panicked,
                2 => Status::Codec,
                other => return Err(WireError(format!("result status {other}"))),
            };
            Ok(FromWorker::Done {
                id,
                busy_nanos,
                status,
                payload: f.rest,
            })
        }
        RETIRING => {
            let rss = f.u64("retiring rss")?;
            f.end("retiring")?;
            Ok(FromWorker::Retiring { rss })
        }
        other => Err(WireError(format!(
            "unknown message kind {other} from a worker"
        ))),
    }
}

/// Splits a byte stream into frame bodies. Bytes are appended as they are read; complete
/// frames are handed out as ranges of the internal buffer.
#[derive(Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    /// Start of the first byte not yet handed out.
    start: usize,
}

impl FrameReader {
    /// Room to read more into: the caller fills some prefix and reports it with `filled`.
    pub(crate) fn spare(&mut self, at_least: usize) -> &mut [u8] {
        if self.start > 0 && self.start == self.buf.len() {
            // Everything was consumed: start over at the front instead of growing.
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.capacity() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + at_least, 0);
        &mut self.buf[len..]
    }

    /// Reports how many bytes of the last [`spare`](Self::spare) were filled.
    pub(crate) fn filled(&mut self, asked: usize, got: usize) {
        let len = self.buf.len();
        self.buf.truncate(len - asked + got);
    }

    /// The next complete frame's body, if one has fully arrived.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Range<usize>>, WireError> {
        let available = &self.buf[self.start..];
        let Some(len) = available.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_FRAME {
            return Err(WireError(format!("frame length {len} is over the limit")));
        }
        if available.len() < 4 + len {
            // Make sure the whole body fits on the next read, not just another chunk of it.
            self.buf.reserve(4 + len - available.len());
            return Ok(None);
        }
        let body = self.start + 4..self.start + 4 + len;
        self.start = body.end;
        Ok(Some(body))
    }

    /// The bytes of a frame returned by [`next_frame`](Self::next_frame).
    pub(crate) fn body(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// The body of a frame returned by [`next_frame`](Self::next_frame), owned: a large frame
    /// that ends the buffer takes the buffer itself (with the body's range in it) instead of
    /// being copied; others are copied out.
    pub(crate) fn take_body(&mut self, range: Range<usize>) -> (Vec<u8>, Range<usize>) {
        if range.len() >= 64 * 1024 && range.end == self.buf.len() {
            self.start = 0;
            (std::mem::take(&mut self.buf), range)
        } else {
            let body = self.buf[range].to_vec();
            let len = body.len();
            (body, 0..len)
        }
    }

    /// How many more bytes the frame being read needs (0 when between frames).
    pub(crate) fn wanted(&self) -> usize {
        let available = &self.buf[self.start..];
        match available.first_chunk::<4>() {
            Some(len) => (4 + u32::from_le_bytes(*len) as usize).saturating_sub(available.len()),
            None => 0,
        }
    }

    /// Bytes read but not yet returned as frames (a truncated frame at end of stream).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(all(test, not(brigade_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(bytes: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, WireError> {
        let mut reader = FrameReader::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            let spare = reader.spare(piece.len());
            spare[..piece.len()].copy_from_slice(piece);
            reader.filled(piece.len(), piece.len());
            while let Some(range) = reader.next_frame()? {
                out.push(reader.body(range).to_vec());
            }
        }
        Ok(out)
    }

    fn body(frame: &[u8]) -> &[u8] {
        &frame[4..]
    }

    #[test]
    fn every_message_round_trips() {
        let mut call = FrameWriter::call(7, -3, 99);
        call.payload().extend_from_slice(b"arg");
        let call = call.seal().unwrap();
        assert_eq!(
            decode_to_worker(body(&call)).unwrap(),
            ToWorker::Call {
                id: 7,
                trampoline: -3,
                func: 99,
                payload: b"arg"
            }
        );
        let init = FrameWriter::init(Some(-5), 1 << 30).seal().unwrap();
        assert_eq!(
            decode_to_worker(body(&init)).unwrap(),
            ToWorker::Init {
                initializer: Some(-5),
                memory_limit: 1 << 30
            }
        );
        let exit = FrameWriter::exit().seal().unwrap();
        assert_eq!(decode_to_worker(body(&exit)).unwrap(), ToWorker::Exit);
        let hello = FrameWriter::hello(42, -8).seal().unwrap();
        assert_eq!(
            decode_from_worker(body(&hello)).unwrap(),
            FromWorker::Hello {
                version: VERSION,
                pid: 42,
                layout: -8
            }
        );
        let failed = FrameWriter::init_failed("no db").seal().unwrap();
        assert_eq!(
            decode_from_worker(body(&failed)).unwrap(),
            FromWorker::InitFailed { message: "no db" }
        );
        let mut done = FrameWriter::done(9, 1234, Status::Panicked);
        done.payload().extend_from_slice(b"boom");
        let done = done.seal().unwrap();
        assert_eq!(
            decode_from_worker(body(&done)).unwrap(),
            FromWorker::Done {
                id: 9,
                busy_nanos: 1234,
                status: Status::Panicked,
                payload: b"boom"
            }
        );
        let retiring = FrameWriter::retiring(5).seal().unwrap();
        assert_eq!(
            decode_from_worker(body(&retiring)).unwrap(),
            FromWorker::Retiring { rss: 5 }
        );
    }

    #[test]
    fn a_garbled_length_is_an_error_not_an_allocation() {
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.push(1);
        assert!(frames(&bytes, 64).is_err());
    }

    #[test]
    fn a_truncated_frame_stays_pending() {
        let frame = FrameWriter::hello(1, 2).seal().unwrap();
        let mut reader = FrameReader::default();
        let cut = frame.len() - 3;
        reader.spare(cut)[..cut].copy_from_slice(&frame[..cut]);
        assert_eq!(reader.next_frame().unwrap(), None);
        assert_eq!(reader.pending(), cut);
    }

    #[test]
    fn a_large_frame_is_handed_over_without_a_copy_and_a_small_one_is_copied() {
        let mut reader = FrameReader::default();
        let mut stream = FrameWriter::exit().seal().unwrap();
        let mut big = FrameWriter::call(1, 2, 3);
        big.payload().extend(std::iter::repeat_n(7u8, 100_000));
        stream.extend(big.seal().unwrap());
        let spare = reader.spare(stream.len());
        spare.copy_from_slice(&stream);
        let small = reader.next_frame().unwrap().unwrap();
        let (body, range) = reader.take_body(small);
        assert_eq!(decode_to_worker(&body[range]).unwrap(), ToWorker::Exit);
        let large = reader.next_frame().unwrap().unwrap();
        let (body, range) = reader.take_body(large.clone());
        assert_eq!(range, large, "the buffer itself, body in place");
        match decode_to_worker(&body[range]).unwrap() {
            ToWorker::Call { id, payload, .. } => {
                assert_eq!((id, payload.len()), (1, 100_000));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(reader.pending(), 0);
        assert_eq!(reader.next_frame().unwrap(), None);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_to_worker(&bytes);
            let _ = decode_from_worker(&bytes);
            let _ = frames(&bytes, 7);
        }

        #[test]
        fn every_prefix_of_a_valid_message_is_rejected_or_shorter(
            id in any::<u64>(), busy in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..32)
        ) {
            let mut done = FrameWriter::done(id, busy, Status::Ok);
            done.payload().extend_from_slice(&payload);
            let frame = done.seal().unwrap();
            let full = body(&frame);
            for cut in 0..18 {
                prop_assert!(decode_from_worker(&full[..cut]).is_err());
            }
            let decoded = decode_from_worker(full).unwrap();
            prop_assert_eq!(decoded, FromWorker::Done { id, busy_nanos: busy, status: Status::Ok, payload: &payload });
        }

        #[test]
        fn frames_survive_any_read_boundaries(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
            chunk in 1usize..97,
        ) {
            let mut stream = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                let mut call = FrameWriter::call(i as u64, 1, 2);
                call.payload().extend_from_slice(p);
                stream.extend(call.seal().unwrap());
            }
            let got = frames(&stream, chunk).unwrap();
            prop_assert_eq!(got.len(), payloads.len());
            for (i, (frame, p)) in got.iter().zip(&payloads).enumerate() {
                let decoded = decode_to_worker(frame).unwrap();
                prop_assert_eq!(decoded, ToWorker::Call { id: i as u64, trampoline: 1, func: 2, payload: p });
            }
        }
    }
}
