//! What the benchmarks under `bench/` share, so that each bench measures and
//! reports the same way and keeps only what is its own: the systems it compares
//! and the call it checks.

mod histogram;
mod load;
mod report;
mod runtime;
mod sample;

pub use histogram::{new_histogram, us};
pub use load::{run, CallFuture, Limit};
pub use report::{mark, Ratios, Spread};
pub use runtime::runtime;
pub use sample::Sample;
