fn main() -> std::process::ExitCode {
    tapeline::cli::main()
}
