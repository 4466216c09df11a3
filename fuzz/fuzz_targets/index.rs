#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    snap::repo::format::decode_untrusted("index", data);
});
