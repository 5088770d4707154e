//! `cemwatch`: the coordinator binary (placeholder until the fleet issue).

fn main() -> std::process::ExitCode {
    eprintln!("{}", cemwatch_coordinator::NOT_YET);
    std::process::ExitCode::from(3)
}
