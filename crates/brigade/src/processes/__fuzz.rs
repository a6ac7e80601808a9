//! The wire's decoders, for the fuzzer in `fuzz/` at the workspace root. Not an API: it
//! exists only in builds with `--cfg fuzzing` (which `cargo fuzz` sets).

/// Feeds `bytes` to a frame reader in reads of the sizes in `chunks` (cycled) under a frame
/// limit of `limit` bytes, and decodes every frame as a message both ways. Panics only on a
/// broken promise of the reader (see `wire::exercise_reader`); a framing error is returned.
pub fn read_frames(bytes: &[u8], chunks: &[usize], limit: usize) -> Result<usize, String> {
    super::wire::exercise_reader(bytes, chunks, limit)
        .map(|frames| frames.len())
        .map_err(|e| e.to_string())
}

/// Decodes `body` as a message to a worker and as a message from a worker.
pub fn decode_message(body: &[u8]) {
    let _ = super::wire::decode_to_worker(body);
    let _ = super::wire::decode_from_worker(body);
}

/// Decodes `bytes` as a chunk's results (`Vec<Result<u64, ItemError>>`) and as a string,
/// through the codec's error-keeping adapter.
pub fn decode_value(bytes: &[u8]) {
    let _ = super::codec::decode::<Vec<Result<u64, super::call::ItemError>>>(bytes);
    let _ = super::codec::decode::<(String, Option<Vec<u8>>)>(bytes);
}
