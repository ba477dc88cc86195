//! The `autofact` binary: parses the command line and runs the agent.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("autofact: not yet implemented");
    std::process::exit(2);
}
