//! Fuzz target: arbitrary bytes as a registry CSV file an administrator loads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::registry::Registry;

fuzz_target!(
    init: {
        // Panics inside automerge on damaged bytes are contained by the code
        // under test (catch_unwind); libFuzzer's abort-on-panic hook would
        // report them anyway. Panics that escape still abort the run.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
    if let Ok(registry) = Registry::from_csv(data) {
        let mut out = Vec::new();
        registry.to_csv(&mut out).expect("a loaded registry writes back");
        assert_eq!(Registry::from_csv(&out[..]).expect("and reads again"), registry);
    }
    }
);
