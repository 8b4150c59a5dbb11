//! ferry-registry (being written).
