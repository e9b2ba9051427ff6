//! State store backends.
