//! Image decoding (every format) from arbitrary bytes: an error or an image, within the limits.
#![no_main]
use impasto::image_io::{DecodeLimits, load_bytes_with};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Limits small enough for libFuzzer's allocation limit (-malloc_limit_mb).
    let limits = DecodeLimits { max_pixels: 1 << 22, max_bytes: Some(256 << 20) };
    if let Ok(img) = load_bytes_with(data, "fuzz", &limits) {
        assert_eq!(img.data.len(), 3 * img.width * img.height);
        assert!((img.width * img.height) as u64 <= limits.max_pixels);
    }
});
