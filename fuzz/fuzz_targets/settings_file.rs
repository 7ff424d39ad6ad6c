//! A settings file from arbitrary bytes: reading the settings embedded in an image (PNG, TIFF,
//! JPEG metadata) and parsing settings JSON never panic, and settings that parse survive the
//! trip back to JSON unchanged.
#![no_main]
use std::path::Path;

use impasto::image_io::metadata;
use impasto::settings::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = match metadata::read_settings(data) {
        Some(text) => text,
        None => match std::str::from_utf8(data) {
            Ok(text) => text.to_string(),
            Err(_) => return,
        },
    };
    if let Ok(settings) = Settings::from_json(&text, Path::new("fuzz.json")) {
        if settings.is_serialisable() {
            let again = Settings::from_json(&settings.to_json(), Path::new("again.json")).expect("reads back");
            assert_eq!(again, settings);
        }
    }
});
