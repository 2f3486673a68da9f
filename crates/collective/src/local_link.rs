//! Links between ranks that live in one process (a worker's local replicas, one per GPU): an
//! in-memory pipe instead of a loopback socket.
//!
//! Why a pipe and not a reduction within the host: in a ring whose ranks are numbered host by
//! host, each host has one link in and one out, and that link carries 2(P−1)/P of a bucket per
//! all-reduce — what a hierarchical reduction's leader would send between hosts too (2(H−1)/H).
//! So the bytes on the wire are the same; what loopback costs is the CPU of two socket copies and
//! the system calls per hop, which an in-memory pipe does without (docs/BENCHMARKS.md, "Local
//! replicas"). Keeping one ring also keeps one code path for groups, generations and failures.
//!
//! How two ranks meet: both know, from the caller, which of their neighbours live in this
//! process ([`InProcess`]). The sender makes a pipe and leaves its reading end in a mailbox of
//! the shared [`LocalLinks`], under the receiver's ring, generation and rank; the receiver waits
//! there for it. No secret or certificate is involved: both ends are this process's memory. The
//! frames on the pipe are the ring's usual frames, read by the same reader as a socket's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::DuplexStream;
use tokio::sync::{Notify, oneshot};

use crate::RingConfig;

/// Bytes a pipe holds before its writer waits: two of the default 1 MiB chunks and their headers,
/// so a writer can put the next frame in while the reader reduces the last.
const PIPE_BYTES: usize = 2 * (1 << 20) + 64;

/// The reading end of an in-process link: one end of a duplex pipe, only read. A duplex end,
/// not a simplex half, because dropping it closes the link: a rank that ends for any reason
/// (its handle dropped, a failed write, a failed formation) gives its next rank an end of
/// stream and its previous rank a broken pipe at once, as a socket's close does, not a silence
/// that only the peer timeout ends.
pub(crate) type PipeReader = DuplexStream;
/// The writing end of an in-process link: the other end, only written.
pub(crate) type PipeWriter = DuplexStream;

/// Which ring, generation and rank a mailbox is for.
type Address = (u16, u32, usize);

/// A pipe left for its receiver, with what the sender believed of the ring: a receiver that
/// believes otherwise has been configured differently, and refuses it. The sender hears back
/// either way, so a link counts as formed only once both ends hold it, as a socket's does.
struct Delivery {
    world: usize,
    chunk: usize,
    pipe: PipeReader,
    taken: oneshot::Sender<Result<(), String>>,
}

/// The mailboxes where a process's ranks leave each other's pipes. One per process (or per
/// test): every rank of this process that forms a ring is given the same one.
#[derive(Default)]
pub struct LocalLinks {
    mailboxes: Mutex<HashMap<Address, Delivery>>,
    delivered: Notify,
}

impl std::fmt::Debug for LocalLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalLinks(..)")
    }
}

/// A rank's neighbours in this process: its link from the previous rank and to the next one are
/// pipes where these say so, sockets otherwise.
#[derive(Clone, Debug)]
pub struct InProcess {
    /// The mailboxes shared by this process's ranks.
    pub links: Arc<LocalLinks>,
    /// The previous rank lives in this process.
    pub prev: bool,
    /// The next rank lives in this process.
    pub next: bool,
}

/// Written as any byte stream is: a frame copied into the pipe, read out by the next rank's reader
/// into the chunk lent for it (no system call, no socket buffer).
impl crate::driver::FrameSink for PipeWriter {}

impl LocalLinks {
    /// Empty mailboxes, to share between this process's ranks.
    pub fn new() -> Arc<LocalLinks> {
        Arc::default()
    }

    /// Makes the link from `ring`'s rank to the next one: the pipe's reading end goes into the
    /// next rank's mailbox, and once the next rank has taken it, its writing end is returned. The
    /// caller bounds the wait (a next rank that never forms never takes it).
    pub(crate) async fn send_to_next(&self, ring: &RingConfig) -> Result<PipeWriter, String> {
        let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
        let (taken, heard) = oneshot::channel();
        let next = (ring.rank + 1) % ring.world;
        {
            let mut mailboxes = self.mailboxes.lock().expect("never poisoned");
            drop_older_generations(&mut mailboxes, ring);
            let address = (ring.ring_id, ring.generation, next);
            // A pipe whose sender gave up (its formation timed out) may be replaced; a live one not.
            if mailboxes.get(&address).is_some_and(|d| !d.taken.is_closed()) {
                return Err(format!(
                    "rank {next} of ring {} (generation {}) already has a pipe waiting: two ranks of this process take it for their next",
                    ring.ring_id, ring.generation
                ));
            }
            mailboxes.insert(address, Delivery { world: ring.world, chunk: ring.chunk, pipe: reader, taken });
        }
        self.delivered.notify_waiters();
        match heard.await {
            Ok(Ok(())) => Ok(writer),
            Ok(Err(why)) => Err(why),
            Err(_) => Err("the next rank, in this process, formed a later generation instead".into()),
        }
    }

    /// Waits for the previous rank's pipe to `ring`'s rank. The caller bounds the wait.
    pub(crate) async fn receive_from_prev(&self, ring: &RingConfig) -> Result<PipeReader, String> {
        let address = (ring.ring_id, ring.generation, ring.rank);
        loop {
            // Registered before looking, so a delivery between the look and the wait is not missed.
            let delivered = self.delivered.notified();
            let taken = {
                let mut mailboxes = self.mailboxes.lock().expect("never poisoned");
                drop_older_generations(&mut mailboxes, ring);
                mailboxes.remove(&address)
            };
            // A pipe whose sender gave up has no writer left: wait for a live one instead.
            if let Some(d) = taken.filter(|d| !d.taken.is_closed()) {
                if (d.world, d.chunk) != (ring.world, ring.chunk) {
                    let why = format!(
                        "the previous rank in this process formed a ring of {} with {}-value chunks; this rank expects {} and {}",
                        d.world, d.chunk, ring.world, ring.chunk
                    );
                    let _ = d.taken.send(Err(why.clone()));
                    return Err(why);
                }
                let _ = d.taken.send(Ok(()));
                return Ok(d.pipe);
            }
            delivered.await;
        }
    }
}

/// Pipes of `ring`'s earlier generations that no one took (their receiver failed first, or the
/// job re-formed before it looked): dropped, so their writers see a broken pipe and their buffers
/// are freed. Generations only grow, so no later formation would ever take or replace them.
fn drop_older_generations(mailboxes: &mut HashMap<Address, Delivery>, ring: &RingConfig) {
    mailboxes.retain(|&(id, generation, _), _| id != ring.ring_id || generation >= ring.generation);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `ring`'s rank sending to its next, in a task of its own (it waits to be taken).
    fn send(links: &Arc<LocalLinks>, ring: RingConfig) -> tokio::task::JoinHandle<Result<PipeWriter, String>> {
        let links = links.clone();
        tokio::spawn(async move { links.send_to_next(&ring).await })
    }

    #[tokio::test]
    async fn a_pipe_reaches_the_next_rank_whichever_side_comes_first() {
        let links = LocalLinks::new();
        let (r0, r1) = (RingConfig::new(0, 2), RingConfig::new(1, 2));
        // Receiver first: it waits for the delivery.
        let waiting = tokio::spawn({
            let links = links.clone();
            async move { links.receive_from_prev(&r1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the receiver should be waiting for the pipe");
        let mut w = links.send_to_next(&r0).await.unwrap();
        w.write_all(b"frame").await.unwrap();
        let mut got = [0u8; 5];
        waiting.await.unwrap().unwrap().read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"frame");
        // Sender first: the pipe waits in the mailbox, and the sender until it is taken.
        let sending = send(&links, r1);
        tokio::task::yield_now().await;
        assert!(!sending.is_finished(), "the sender should wait until its pipe is taken");
        assert!(links.receive_from_prev(&r0).await.is_ok());
        assert!(sending.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn other_rings_and_generations_have_their_own_mailboxes_and_a_mismatch_is_refused() {
        let links = LocalLinks::new();
        let stale = send(&links, RingConfig { generation: 3, ..RingConfig::new(0, 2) });
        tokio::task::yield_now().await;
        let now = RingConfig { generation: 4, ..RingConfig::new(1, 2) };
        let wait = tokio::time::timeout(Duration::from_millis(50), links.receive_from_prev(&now)).await;
        assert!(wait.is_err(), "a pipe of generation 3 reached generation 4");
        let e = stale.await.unwrap().unwrap_err();
        assert!(e.contains("later generation"), "the stale sender should hear its pipe was dropped: {e}");
        // Another ring (a group ring, id 1) has a mailbox of its own.
        let _other = send(&links, RingConfig { ring_id: 1, generation: 4, ..RingConfig::new(0, 2) });
        tokio::task::yield_now().await;
        let wait = tokio::time::timeout(Duration::from_millis(50), links.receive_from_prev(&now)).await;
        assert!(wait.is_err(), "a pipe of ring 1 reached ring 0");

        let mismatched = send(&links, RingConfig { chunk: 7, ..RingConfig::new(0, 2) });
        let e = links.receive_from_prev(&RingConfig::new(1, 2)).await.unwrap_err();
        assert!(e.contains("7-value chunks"), "{e}");
        assert!(mismatched.await.unwrap().unwrap_err().contains("7-value chunks"), "the sender hears the refusal too");
    }

    #[tokio::test]
    async fn two_senders_to_one_rank_are_refused() {
        let links = LocalLinks::new();
        let _first = send(&links, RingConfig::new(0, 3));
        tokio::task::yield_now().await;
        let e = links.send_to_next(&RingConfig::new(0, 3)).await.unwrap_err();
        assert!(e.contains("already has a pipe waiting"), "{e}");
    }

    #[tokio::test]
    async fn a_pipe_whose_sender_gave_up_is_replaced_and_never_taken() {
        let links = LocalLinks::new();
        let gave_up = send(&links, RingConfig::new(0, 2));
        tokio::task::yield_now().await;
        gave_up.abort(); // its formation timed out
        let _ = gave_up.await;
        let wait = tokio::time::timeout(Duration::from_millis(50), links.receive_from_prev(&RingConfig::new(1, 2))).await;
        assert!(wait.is_err(), "the receiver took a pipe nobody writes");
        let retry = send(&links, RingConfig::new(0, 2));
        assert!(links.receive_from_prev(&RingConfig::new(1, 2)).await.is_ok());
        assert!(retry.await.unwrap().is_ok(), "a retry replaces the abandoned pipe");
    }

    #[tokio::test]
    async fn a_dropped_end_closes_the_link() {
        let links = LocalLinks::new();
        let sending = send(&links, RingConfig::new(0, 2));
        let mut r = links.receive_from_prev(&RingConfig::new(1, 2)).await.unwrap();
        let mut w = sending.await.unwrap().unwrap();
        w.write_all(b"last").await.unwrap();
        drop(w);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last", "the reader drains what was written, then sees the end");
        let sending = send(&links, RingConfig::new(1, 2));
        drop(links.receive_from_prev(&RingConfig::new(0, 2)).await.unwrap());
        let mut w = sending.await.unwrap().unwrap();
        assert_eq!(w.write_all(b"x").await.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    }
}
