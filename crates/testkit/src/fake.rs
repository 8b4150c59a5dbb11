//! Fake registry (being written).
