#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| quire_codecs::fuzzing::credential(data));
