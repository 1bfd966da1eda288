#![no_main]
// See snapsite::testing::fuzzing::spool_journal.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::spool_journal(data));
