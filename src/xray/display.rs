//! Review images.
