//! The message decoder and the value codec on arbitrary bodies: no panic, no unbounded
//! allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    brigade::processes::__fuzz::decode_message(data);
    brigade::processes::__fuzz::decode_value(data);
});
