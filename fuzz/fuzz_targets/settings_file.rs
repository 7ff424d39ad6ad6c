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
        Ok(Some(text)) => text,
        // Refused (too large, claims beyond the file): bounded, no panic.
        Err(_) => return,
        Ok(None) => match std::str::from_utf8(data) {
            Ok(text) => text.to_string(),
            Err(_) => return,
        },
    };
    assert!(text.len() <= metadata::MAX_SETTINGS_BYTES || !metadata::is_image(data));
    if let Ok(settings) = Settings::from_json(&text, Path::new("fuzz.json")) {
        // Checking its options never panics (and bounds what a run of them could ask for).
        if let Ok(stylizer) = impasto::transfer::Stylizer::new(settings.config.clone()) {
            assert!(stylizer.config().loss.style_layers.len() <= impasto::loss::MAX_LAYERS);
        }
        if settings.is_serialisable() {
            let again = Settings::from_json(&settings.to_json(), Path::new("again.json")).expect("reads back");
            assert_eq!(again, settings);
        }
    }
});
