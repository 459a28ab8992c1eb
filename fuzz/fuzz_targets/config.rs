//! Any text as a config file: parsing never panics, and errors stay on one line.
#![no_main]

use c19::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, std::path::Path::new("fuzz.yaml")) {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
});
