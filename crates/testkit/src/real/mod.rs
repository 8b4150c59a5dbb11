//! Real components (being written).
