//! A generated program (seeded by the input bytes): if the compiler accepts it, the kernel's
//! verifier must accept it too (body: `luabpf_tests::fuzzing::verify_generated`). Needs
//! bpf() (root) to check the verifier; without it only the compiler is exercised.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    luabpf_tests::fuzzing::verify_generated(data);
});
