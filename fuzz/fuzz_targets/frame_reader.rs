//! The frame reader on arbitrary byte streams, cut into arbitrary reads, under an arbitrary
//! frame limit: no panic, no allocation past what was received (checked inside
//! `read_frames`; run with `-malloc_limit_mb` to catch any allocation that trusts a length),
//! no hang, and every frame decoded as a message both ways.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first bytes choose how the stream is read: four read sizes and the limit.
    let Some((head, stream)) = data.split_first_chunk::<5>() else {
        return;
    };
    let chunks: Vec<usize> = head[..4].iter().map(|&b| usize::from(b) * 37 + 1).collect();
    let limit = match head[4] {
        0..=127 => usize::MAX,
        small => usize::from(small) * 4,
    };
    let _ = brigade::processes::__fuzz::read_frames(stream, &chunks, limit);
});
