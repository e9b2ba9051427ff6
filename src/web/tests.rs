//! Rendering tests of the console pages over a made-up state directory.
