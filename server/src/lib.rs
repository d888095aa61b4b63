//! Thôn Sync server library.
