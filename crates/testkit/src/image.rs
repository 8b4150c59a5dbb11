//! Random images (being written).
