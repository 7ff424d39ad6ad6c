//! The zip torch.save reader on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = impasto::weights::torch_zip::read(data);
});
