#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cemwatch_fuzz::cert(data));
