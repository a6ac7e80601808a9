//! Reading frames off a byte stream (see the parent module for the format).

use std::io;
use std::ops::Range;
use std::os::fd::AsFd;

use super::{CHECK, FRAME_HEADER, WireError};
#[cfg(any(test, fuzzing))]
use super::{decode_from_worker, decode_to_worker};

/// What a reader asks of the socket at least, per read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

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
            super::super::spare::advise_huge(self.buf.as_ptr(), self.buf.capacity());
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
