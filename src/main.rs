//! The `atlasfs` command: manage an atlas store and move arrays in and out as `.npy`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
