//! The legacy torch.save reader (its pickle machine) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = impasto::weights::torch_legacy::read(data);
    let _ = impasto::weights::pickle::Parser::new(data).load();
});
