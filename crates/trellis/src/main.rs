//! The `trellis` command: control plane, sidecar proxy, app launcher and demo.

mod cli;
mod cmd;

fn main() -> std::process::ExitCode {
    cli::main()
}
