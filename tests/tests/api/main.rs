//! Integration tests: the API over HTTP against the emulator. One test binary (one link).

mod batches;
