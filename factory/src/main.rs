//! The `autofactory` binary: parses the command line and runs the factory.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("autofactory: not yet implemented");
    std::process::exit(2);
}
