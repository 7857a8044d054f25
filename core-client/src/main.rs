//! `core-client`: run commands on exec-servers through an encrypted relay.

fn main() -> std::process::ExitCode {
    core_client::main()
}
