//! `cemwatch`: the coordinator; see the library.

fn main() -> std::process::ExitCode {
    cemwatch_coordinator::cli::main_with_args(std::env::args_os())
}
