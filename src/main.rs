fn main() {
    std::process::exit(snap::cli::main());
}
