//! promised library.

pub mod schema;
