//! `crambench`: the command-line interface, a thin layer over the library. `cli` parses the
//! arguments and runs one command (one file per area under `cli/`); each prints a table for
//! people or JSON for machines (`--json`) through one stdout writer. Progress goes to stderr;
//! errors go to stderr with an exit code from [`crambench::ExitCode`].
use crambench::error::{exit_code_of, ExitCode};

#[macro_use]
mod cli;

fn main() {
    cli::install_panic_hook();
    // Before any tch call: register libtorch's CUDA backend where it exists.
    crambench::torchrt::load_cuda_backend();
    let code = run(cli::parse());
    std::process::exit(code as i32);
}

/// Run the command; an error is printed once here. A closed stdout ends the command quietly
/// with exit 0 (the reader went away, as `crambench … | head` does).
fn run(cli: cli::Cli) -> ExitCode {
    match cli.command.run() {
        Ok(code) => code,
        Err(err) if err.chain().any(|e| e.is::<cli::StdoutClosed>()) => ExitCode::Ok,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit_code_of(&err)
        }
    }
}
