//! Unit tests of the readers: see crates/archive/tests/read.rs for whole archives.
