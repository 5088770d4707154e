fn main() -> std::process::ExitCode {
    cemwatch_bench::main()
}
