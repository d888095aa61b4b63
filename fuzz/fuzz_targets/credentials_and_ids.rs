//! Fuzz target: arbitrary text as ids, enrollment codes and bearer tokens,
//! the first things the server reads from a request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::access::{check_token, parse_enrollment_code, DEVICE_TOKEN_PREFIX};
use sync_core::ids::DocumentId;

fuzz_target!(
    init: {
        // Panics inside automerge on damaged bytes are contained by the code
        // under test (catch_unwind); libFuzzer's abort-on-panic hook would
        // report them anyway. Panics that escape still abort the run.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = text.parse::<DocumentId>() {
        assert_eq!(id.to_string().parse::<DocumentId>().unwrap(), id);
        assert!(!id.to_string().contains('/') && !id.to_string().contains(".."));
    }
    if let Ok(code) = parse_enrollment_code(text) {
        assert_eq!(parse_enrollment_code(&code).unwrap(), code);
    }
    let _ = check_token(text, DEVICE_TOKEN_PREFIX, "device");
    }
);
