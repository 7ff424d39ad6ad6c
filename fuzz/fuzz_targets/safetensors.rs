//! Weights files of any format through the format sniffing and the key layouts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = impasto::weights::read_tensors(data);
    let _ = impasto::weights::load_bytes(data, std::path::Path::new("fuzz.safetensors"), None);
});
