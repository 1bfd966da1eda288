#![no_main]
// See snapsite::fuzzing::lvm_resume_token.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::lvm_resume_token(data));
