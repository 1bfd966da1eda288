#![no_main]
// See snapsite::fuzzing::spool_journal.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::spool_journal(data));
