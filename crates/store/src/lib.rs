//! ferry-store (being written).
