//! ferry-copy (being written).
