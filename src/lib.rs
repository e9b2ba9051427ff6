//! promised library.
