//! ferry-testkit (being written).
