//! Command groups of the `crambench` binary, one file per area; each defines its clap
//! arguments and calls into the library.
