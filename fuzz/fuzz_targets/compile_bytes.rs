//! Any bytes as a program file: the compiler answers with an object or diagnostics, never a
//! panic (body: `luabpf_tests::fuzzing::compile_bytes`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    luabpf_tests::fuzzing::compile_bytes(data);
});
