//! A TCP proxy on loopback that the test can cut and restore, to simulate a network cut between
//! an agent and the factory without touching any real network.
//!
//! While cut, bytes are neither read nor forwarded in either direction and new connections are
//! accepted by the kernel but not connected upstream: the peers see silence, as through a dead link.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A running proxy; stops accepting when dropped (pumps end when either side closes).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    cut: AtomicBool,
    stop: AtomicBool,
    connections: AtomicU64,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        });
        let st = state.clone();
        thread::spawn(move || accept_loop(listener, upstream, st));
        Ok(Proxy { addr, state })
    }

    /// Where agents should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops all forwarding until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// Resumes forwarding.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

fn wait_while_cut(state: &State) -> bool {
    while state.cut.load(Ordering::SeqCst) {
        if state.stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    !state.stop.load(Ordering::SeqCst)
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((down, _)) => {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let st = state.clone();
                thread::spawn(move || {
                    // A connection made during a cut waits for the link to come back.
                    if !wait_while_cut(&st) {
                        return;
                    }
                    let Ok(up) = TcpStream::connect(upstream) else {
                        return;
                    };
                    let _ = down.set_nonblocking(false);
                    let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
                        return;
                    };
                    let st2 = st.clone();
                    thread::spawn(move || pump(down2, up2, &st2));
                    pump(up, down, &st);
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(20)),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: &State) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if !wait_while_cut(state) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Bytes read just as the cut began are held, not lost: a cut link delays, it does not
                // corrupt a TCP stream.
                if !wait_while_cut(state) || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
