//! The thonsync-server binary.
fn main() {}
