//! The `snapsite` binary: the command line lives in src/cli/.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::main()
}
