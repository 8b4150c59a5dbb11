//! ferry-archive (being written).
