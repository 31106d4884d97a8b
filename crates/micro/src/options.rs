//! Service options from flags, environment and files.
