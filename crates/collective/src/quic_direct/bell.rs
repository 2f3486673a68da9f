//! Waking a link thread that sleeps in `ppoll` on its UDP socket: an eventfd it polls beside the
//! socket, written only when the thread has said it is about to sleep, so that handing work to a
//! busy thread costs no system call.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A link thread's doorbell.
#[derive(Debug)]
pub(crate) struct Bell {
    fd: OwnedFd,
    /// Set by the thread just before it sleeps; whoever clears it rings.
    asleep: AtomicBool,
}

impl Bell {
    pub(crate) fn new() -> io::Result<Bell> {
        // SAFETY: eventfd returns a new descriptor we own, or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        Ok(Bell { fd: unsafe { OwnedFd::from_raw_fd(fd) }, asleep: AtomicBool::new(false) })
    }

    /// Wakes the thread if it sleeps or is about to; call it after handing it work.
    pub(crate) fn ring(&self) {
        if self.asleep.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN)
            // already wakes the thread, so the result needs no handling.
            unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// The thread sleeps until `socket` is readable (or writable, with `want_write`), the bell
    /// rings, or `timeout` passes (`None`: no timer). `has_work` is asked after the thread has
    /// announced its sleep: work handed over before that is seen there, work handed over after
    /// it rings the bell, so none is slept through.
    pub(crate) fn sleep(&self, socket: RawFd, want_write: bool, timeout: Option<Duration>, has_work: impl Fn() -> bool) {
        self.asleep.store(true, Ordering::SeqCst);
        if has_work() {
            self.asleep.store(false, Ordering::SeqCst);
            return;
        }
        let events = libc::POLLIN | if want_write { libc::POLLOUT } else { 0 };
        let mut fds =
            [libc::pollfd { fd: socket, events, revents: 0 }, libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        // Nanoseconds, not poll's milliseconds: QUIC's pacing timers are often shorter than one.
        let ts = timeout.map(|t| libc::timespec { tv_sec: t.as_secs().min(i32::MAX as u64) as _, tv_nsec: t.subsec_nanos() as _ });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: two valid pollfds, a valid or null timespec, no signal mask. EINTR only means
        // an early wake-up, which the caller's loop absorbs.
        unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ts_ptr, std::ptr::null()) };
        self.asleep.store(false, Ordering::SeqCst);
        if fds[1].revents != 0 {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
            unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_ring_wakes_a_sleeper_and_a_timeout_ends_a_quiet_sleep() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bell = Arc::new(Bell::new().unwrap());
        let t0 = Instant::now();
        bell.sleep(sock.as_raw_fd(), false, Some(Duration::from_millis(30)), || false);
        assert!(t0.elapsed() >= Duration::from_millis(25), "slept {:?}", t0.elapsed());
        let ringer = bell.clone();
        let t0 = Instant::now();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            ringer.ring();
        });
        bell.sleep(sock.as_raw_fd(), false, Some(Duration::from_secs(20)), || false);
        assert!(t0.elapsed() < Duration::from_secs(10), "the bell did not wake the sleeper");
        h.join().unwrap();
        // Work already there: no sleep at all.
        let t0 = Instant::now();
        bell.sleep(sock.as_raw_fd(), false, Some(Duration::from_secs(20)), || true);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
}
