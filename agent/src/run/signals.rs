//! SIGTERM and SIGINT become the agent's shutdown channel, without a signal handler: the
//! signals are blocked and a dedicated thread waits for them with `sigwait`.

use nix::sys::signal::{SigSet, Signal};

/// Blocks SIGTERM and SIGINT in the calling thread (and in every thread it spawns afterwards, so
/// call it first in `main`), and returns a receiver that fires when one arrives. A second signal
/// while shutting down ends the process at once with status 130, for a user who insists.
pub fn shutdown_on_signals() -> Result<smol::channel::Receiver<()>, nix::Error> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    let (tx, rx) = smol::channel::bounded(1);
    std::thread::Builder::new()
        .name("autofact-signals".into())
        .spawn(move || {
            let mut seen = 0;
            while let Ok(sig) = set.wait() {
                seen += 1;
                if seen > 1 {
                    eprintln!("autofact: second {sig:?}: exiting without flushing");
                    std::process::exit(130);
                }
                eprintln!("autofact: {sig:?}: stopping");
                let _ = tx.try_send(());
            }
        })
        .map_err(|e| nix::Error::try_from(e).unwrap_or(nix::Error::EAGAIN))?;
    Ok(rx)
}
