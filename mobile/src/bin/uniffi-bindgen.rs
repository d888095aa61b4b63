//! `uniffi-bindgen` of the exact uniffi version the crate is built with:
//! generates the Kotlin, Swift and Python bindings from the built library.

fn main() {
    uniffi::uniffi_bindgen_main()
}
