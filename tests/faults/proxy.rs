//! A userspace TCP proxy for one directed peer link (the agent that opens the connection → the
//! agent that answers), the way etcd's functional tester cuts links: every byte goes through this
//! process, so a test can black-hole either direction or delay it without touching the kernel.
//!
//! A black-holed direction reads and discards bytes and keeps the connection open, so the sender
//! sees a silent peer and runs into its timeout, as behind a real partition (no RST to give it
//! away). A connection that lost bytes can never carry a valid HTTP exchange again, so it stays
//! silent until the fault is lifted and is then closed.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often a blocked read looks at the link's settings and the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What the nemesis can do to one direction of a link.
#[derive(Default)]
pub struct Direction {
    blackhole: AtomicBool,
    delay_ms: AtomicU64,
}

/// The settings of one link, shared between the nemesis and the proxy's threads.
#[derive(Default)]
pub struct Link {
    /// Requests: bytes from the connecting agent to the listening one.
    pub request: Direction,
    /// Responses: bytes back to the connecting agent.
    pub response: Direction,
    stop: AtomicBool,
}

impl Link {
    pub fn blackhole(&self, request: bool, response: bool) {
        self.request.blackhole.store(request, Ordering::SeqCst);
        self.response.blackhole.store(response, Ordering::SeqCst);
    }
    pub fn delay(&self, ms: u64) {
        self.request.delay_ms.store(ms, Ordering::SeqCst);
        self.response.delay_ms.store(ms, Ordering::SeqCst);
    }
    pub fn heal(&self) {
        self.blackhole(false, false);
        self.delay(0);
    }
    fn faulty(&self) -> bool {
        self.request.blackhole.load(Ordering::SeqCst)
            || self.response.blackhole.load(Ordering::SeqCst)
    }
}

/// A listening proxy; its threads end when it is dropped.
pub struct LinkProxy {
    pub listen: String,
    pub link: Arc<Link>,
}

impl LinkProxy {
    /// Listens on `listen` and forwards every connection to `upstream`.
    pub fn start(listen: &str, upstream: &str) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let link = Arc::new(Link::default());
        let upstream = upstream.to_string();
        let shared = link.clone();
        std::thread::spawn(move || accept_loop(listener, &upstream, shared));
        Ok(LinkProxy {
            listen: listen.into(),
            link,
        })
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.link.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, upstream: &str, link: Arc<Link>) {
    while !link.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) = TcpStream::connect_timeout(
                    &upstream.parse().expect("upstream address"),
                    Duration::from_millis(500),
                ) else {
                    // The agent behind the link is down: refuse, as it would.
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let poisoned = Arc::new(AtomicBool::new(false));
                for (from, to, request) in [
                    (client.try_clone(), server.try_clone(), true),
                    (server.try_clone(), client.try_clone(), false),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        break;
                    };
                    let link = link.clone();
                    let poisoned = poisoned.clone();
                    std::thread::spawn(move || pump(from, to, &link, request, &poisoned));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Copies one direction, applying the link's settings to every chunk as it passes.
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link, request: bool, poisoned: &AtomicBool) {
    let direction = if request {
        &link.request
    } else {
        &link.response
    };
    let _ = from.set_read_timeout(Some(POLL));
    let _ = to.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if link.stop.load(Ordering::SeqCst) || (poisoned.load(Ordering::SeqCst) && !link.faulty()) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        if direction.blackhole.load(Ordering::SeqCst) || poisoned.load(Ordering::SeqCst) {
            poisoned.store(true, Ordering::SeqCst);
            continue;
        }
        let delay = direction.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
