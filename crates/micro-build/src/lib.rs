//! Code generation for micro.
