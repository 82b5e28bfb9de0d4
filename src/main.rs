fn main() -> std::process::ExitCode {
    hoopbot::install_crypto_provider();
    hoopbot::cli::main()
}
