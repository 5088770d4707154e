//! `cemwatch-probe`: see the library for everything.

fn main() -> std::process::ExitCode {
    cemwatch_probe::cli::main_with_args(std::env::args_os())
}
