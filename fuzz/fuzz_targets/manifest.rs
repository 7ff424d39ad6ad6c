//! A batch manifest from arbitrary bytes (JSON Lines, or CSV when the first byte is odd):
//! counting, listing, checking and finding an item by index never panic, and agree: the item
//! found by index is the one the listing gives at that place.
#![no_main]
use impasto::batch::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, text)) = data.split_first() else { return };
    let dir = std::env::temp_dir().join(format!("impasto-fuzz-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join(if kind % 2 == 1 { "m.csv" } else { "m.jsonl" });
    std::fs::write(&path, text).expect("write the manifest");
    let Ok(manifest) = Manifest::open(&path) else { return };
    let Ok(len) = manifest.len() else { return };
    let listed: Vec<_> = match manifest.items() {
        Ok(items) => items.take(64).collect(),
        Err(_) => return,
    };
    assert!(listed.len() == len.min(64));
    for (k, item) in listed.iter().enumerate() {
        match (item, manifest.item(k)) {
            (Ok(a), Ok(b)) => assert_eq!(*a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("item {k}: listed {a:?}, by index {b:?}"),
        }
    }
    let _ = manifest.check_all();
    assert!(manifest.item(len).is_err());
});
