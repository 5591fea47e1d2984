#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vexil_fuzz::http1_framing(data));
