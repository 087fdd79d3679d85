//! Command groups of the `crambench` binary, one file per area; each defines its clap
//! arguments and calls into the library.
pub mod bench_data;
pub mod bench_train;
pub mod data;
pub mod glue;
pub mod train;
