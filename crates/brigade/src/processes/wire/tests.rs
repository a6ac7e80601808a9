//! The wire's unit and property tests.

use super::reader::READ_CHUNK;
use super::*;
use proptest::prelude::*;

fn frames(bytes: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, WireError> {
    exercise_reader(bytes, &[chunk], MAX_FRAME)
}

fn body(frame: &[u8]) -> &[u8] {
    &frame[FRAME_HEADER..]
}

fn header(len: u32) -> Vec<u8> {
    let mut bytes = len.to_le_bytes().to_vec();
    bytes.extend((len ^ CHECK).to_le_bytes());
    bytes
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
    let mut init = FrameWriter::init(1 << 30, 77, Some((-5, 6)));
    init.payload().extend_from_slice(b"init arg");
    let init = init.seal().unwrap();
    assert_eq!(
        decode_to_worker(body(&init)).unwrap(),
        ToWorker::Init {
            memory_limit: 1 << 30,
            message_limit: 77,
            initializer: Some((-5, 6)),
            payload: b"init arg",
        }
    );
    let plain = FrameWriter::init(0, 1, None).seal().unwrap();
    assert!(matches!(
        decode_to_worker(body(&plain)).unwrap(),
        ToWorker::Init {
            initializer: None,
            ..
        }
    ));
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
    let mut done = FrameWriter::done(9);
    done.payload().extend_from_slice(b"boom");
    done.set_done(1234, Verdict::Panicked);
    let done = done.seal().unwrap();
    assert_eq!(
        decode_from_worker(body(&done)).unwrap(),
        FromWorker::Done {
            id: 9,
            busy_nanos: 1234,
            verdict: Verdict::Panicked,
            payload: b"boom"
        }
    );
    let retiring = FrameWriter::retiring(5).seal().unwrap();
    assert_eq!(
        decode_from_worker(body(&retiring)).unwrap(),
        FromWorker::Retiring { rss: 5 }
    );
    let pull = FrameWriter::pull(1 << 40).seal().unwrap();
    assert_eq!(
        decode_from_worker(body(&pull)).unwrap(),
        FromWorker::Pull { want: 1 << 40 }
    );
}

#[test]
fn a_length_over_the_limit_is_refused_as_soon_as_it_arrives() {
    // 4 GB claimed, 5 bytes sent: refused, and nothing near 4 GB was allocated.
    let mut bytes = header(u32::MAX);
    bytes.push(1);
    assert!(frames(&bytes, 64).is_err());
    // Over a small limit, by one byte: the error names both.
    let mut reader = FrameReader::new(100);
    reader.push(&header(101));
    let e = reader.next_frame().unwrap_err();
    assert!(
        e.0.contains("101 bytes") && e.0.contains("100 bytes"),
        "{e}"
    );
}

#[test]
fn a_length_that_lies_costs_only_what_was_sent() {
    // Claims 1 GiB, sends 1 MiB: the buffer follows what arrived.
    let mut reader = FrameReader::new(MAX_FRAME);
    reader.push(&header(1 << 30));
    let mut sent = FRAME_HEADER;
    while sent < FRAME_HEADER + (1 << 20) {
        sent += reader.push(&[7u8; 4096]);
    }
    assert_eq!(reader.next_frame().unwrap(), None);
    assert!(
        reader.capacity() <= 2 * sent + 2 * READ_CHUNK,
        "{}",
        reader.capacity()
    );
}

#[test]
fn bytes_that_are_not_a_frame_are_refused_at_their_header() {
    // A plausible length without its check: refused at once, not waited on.
    let mut bytes = 100u32.to_le_bytes().to_vec();
    bytes.extend([0; 4]);
    assert!(frames(&bytes, 3).is_err());
    // A valid frame after two stray bytes: misaligned, refused.
    let mut bytes = vec![1, 2];
    bytes.extend(FrameWriter::exit().seal().unwrap());
    assert!(frames(&bytes, 64).is_err());
}

#[test]
fn a_truncated_frame_stays_pending() {
    let frame = FrameWriter::hello(1, 2).seal().unwrap();
    let mut reader = FrameReader::new(MAX_FRAME);
    let cut = frame.len() - 3;
    assert_eq!(reader.push(&frame[..cut]), cut);
    assert_eq!(reader.next_frame().unwrap(), None);
    assert_eq!(reader.pending(), cut);
}

#[test]
fn a_reader_says_which_byte_of_the_stream_it_waits_for() {
    let mut reader = FrameReader::new(MAX_FRAME);
    assert_eq!(reader.wanted(), None);
    let exit = FrameWriter::exit().seal().unwrap();
    assert_eq!(exit, EXIT_FRAME, "the constant is the sealed exit frame");
    let mut big = FrameWriter::call(1, 2, 3);
    big.payload().extend(std::iter::repeat_n(7u8, 100_000));
    let big = big.seal().unwrap();
    let stream = [&exit[..], &big[..]].concat();
    // Part of the exit frame's header: it waits for the rest of the header.
    reader.push(&stream[..3]);
    assert_eq!(reader.wanted(), Some(FRAME_HEADER as u64));
    // The exit frame and part of the call's header, then part of its body.
    reader.push(&stream[3..exit.len() + 5]);
    let range = reader.next_frame().unwrap().unwrap();
    assert_eq!(
        decode_to_worker(reader.body(range)).unwrap(),
        ToWorker::Exit
    );
    assert_eq!(reader.wanted(), Some((exit.len() + FRAME_HEADER) as u64));
    reader.push(&stream[exit.len() + 5..exit.len() + 1000]);
    assert_eq!(reader.next_frame().unwrap(), None);
    assert_eq!(reader.wanted(), Some(stream.len() as u64));
    let mut at = exit.len() + 1000;
    while at < stream.len() {
        at += reader.push(&stream[at..]);
    }
    assert!(reader.next_frame().unwrap().is_some());
    assert_eq!(reader.wanted(), None, "nothing pending");
    reader.release();
    assert_eq!(reader.capacity(), 0, "an empty reader lets its memory go");
}

#[test]
fn growing_to_a_large_frame_takes_few_allocations() {
    // Linear time: the buffer grows geometrically with what arrives, so a 64 MiB frame
    // read 64 KiB at a time grows a handful of times, not a thousand.
    let mut reader = FrameReader::new(MAX_FRAME);
    let len = 64 << 20;
    reader.push(&header(len as u32));
    let block = vec![0u8; READ_CHUNK];
    let mut got = 0;
    let mut growths = 0;
    let mut capacity = reader.capacity();
    while got < len {
        got += reader.push(&block[..READ_CHUNK.min(len - got)]);
        if reader.capacity() != capacity {
            growths += 1;
            capacity = reader.capacity();
        }
    }
    assert!(reader.next_frame().unwrap().is_some());
    assert!(growths <= 16, "{growths} growths");
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        chunks in proptest::collection::vec(0usize..80, 0..6),
        limit in prop_oneof![Just(MAX_FRAME), 0usize..300],
    ) {
        let _ = decode_to_worker(&bytes);
        let _ = decode_from_worker(&bytes);
        let _ = exercise_reader(&bytes, &chunks, limit);
    }

    #[test]
    fn huge_lengths_are_refused_or_wait_without_allocating(
        len in any::<u32>(),
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        limit in prop_oneof![Just(MAX_FRAME), 0usize..(1 << 20)],
    ) {
        let mut bytes = header(len);
        bytes.extend_from_slice(&tail);
        let outcome = exercise_reader(&bytes, &[7, 300], limit);
        if len as usize > limit {
            prop_assert!(outcome.is_err());
        } else if tail.len() < len as usize {
            prop_assert_eq!(outcome, Ok(Vec::new()));
        } else if let Ok(frames) = outcome {
            // (What follows the first frame is arbitrary and may be refused.)
            prop_assert_eq!(frames[0].len(), len as usize);
        }
    }

    #[test]
    fn every_prefix_of_a_valid_message_is_rejected_or_shorter(
        id in any::<u64>(), busy in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..32)
    ) {
        let mut done = FrameWriter::done(id);
        done.payload().extend_from_slice(&payload);
        done.set_done(busy, Verdict::Value);
        let frame = done.seal().unwrap();
        let full = body(&frame);
        for cut in 0..18 {
            prop_assert!(decode_from_worker(&full[..cut]).is_err());
        }
        let decoded = decode_from_worker(full).unwrap();
        prop_assert_eq!(decoded, FromWorker::Done { id, busy_nanos: busy, verdict: Verdict::Value, payload: &payload });
        // Every truncation of the stream yields no frame, never a wrong one.
        for cut in 0..frame.len() {
            prop_assert_eq!(frames(&frame[..cut], 5).unwrap().len(), 0);
        }
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
