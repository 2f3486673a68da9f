//! ringsam-membership: who is in the training job, and at which generation, agreed with no
//! coordinator (so no single point of failure).
//!
//! Workers are [`Slot`]s, stable across restarts (a Kubernetes pod index, or a process index
//! under `ringsam launch`); each owns `replicas` consecutive ranks. [`Rendezvous`] is one
//! worker's side of the protocol as a deterministic state machine in the style of
//! `ringsam-ring`: no I/O, no threads, no clock. The driver feeds it messages and the time
//! (`handle_*`) and drains what it wants written to disk, sent, woken at and reported (`poll_*`;
//! the order is in [`rendezvous`]). Time is a [`Duration`](std::time::Duration) since any origin
//! the driver likes. The protocol is tested in a simulator (`tests/membership_sim.rs`) that
//! delays, drops and partitions messages and kills, restarts and pauses workers.
//!
//! What it is not: a transport ([`encode`] and [`decode`] give bytes; the driver sends them to a
//! slot's current address), a ring, or a checkpoint store. It says where the training state of a
//! new generation comes from ([`StateSource`]); moving it is the runtime's job.
//!
//! # Protocol
//! 1. **Phases.** `Forming` (rendezvous), `Proposing` (a leader waiting for accepts), `Promised`
//!    (accepted a proposal, waiting for its commit), `Running` (in a formed [`Membership`]).
//! 2. **Forming.** Every `heartbeat`, a forming worker sends a `Join` to every other slot: its
//!    replicas, its training state ([`StateTag`]), its incarnation (higher after each restart),
//!    and its promises (the newest membership it knows committed, and every proposal it accepted
//!    since). Each worker keeps the last Join of every slot; a slot is a *live joiner* while its
//!    last Join is younger than `suspect_after`. A Join from an older incarnation than one
//!    already heard is from a dead process and is dropped.
//! 3. **Leader.** A forming worker computes which workers a proposal would hold: itself and the
//!    live joiners, the lowest slots up to `max_replicas`, leaving out any whose advertised
//!    promises the rest cannot meet (they would refuse). The lowest slot of that set leads. It
//!    proposes when the set's replicas reach `min_replicas` and either the live joiners reach
//!    `max_replicas` and the set has not changed for one heartbeat (every forming worker's Join
//!    has had time to arrive, so a lower slot is not beaten to the lead by a faster one), or
//!    `settle` has passed since the set last changed.
//!    The proposal's generation is one above the highest generation this worker has seen
//!    anywhere. It must hold a strict majority (more than half, counted in slots) of every
//!    membership the leader itself has promised to respect (rule 4); a minority cannot, and
//!    waits: for the partition to heal, or for the lost workers to come back.
//! 4. **Accept.** Any worker not running a generation at or above the proposal's, the proposer
//!    included, accepts a `Propose` if and only if: it is a member; the proposal's generation
//!    is above every generation it accepted or knows committed; and the proposal holds a strict
//!    majority of its newest committed membership *and of every proposal it accepted since*. On
//!    accepting it persists the new promise ([`Rendezvous::poll_persist`]) and queues the
//!    `Accept` after it: the driver writes records before it sends. Otherwise it sends `Reject`
//!    with its newest accepted or committed membership, so the proposer's next generation is
//!    higher.
//! 5. **Commit.** The proposer waits up to `suspect_after` for the Accepts of *all* proposed
//!    members (every member must be in the ring anyway), then sends `Commit` to all and runs.
//!    A Reject or the deadline sends it back to forming; it forgets the Joins of the members
//!    that did not accept (they are busy elsewhere, or gone) and proposes again no sooner than
//!    one heartbeat later (leadership is by slot, so no random back-off is needed).
//! 6. **State source.** The maximum [`StateTag`] among the members (from their Joins, and the
//!    proposer's own): [`StateSource::Memory`] from the lowest slot holding it; if no member
//!    holds any state, [`StateSource::Disk`] (all resume from the newest valid checkpoint).
//! 7. **Promised.** The matching `Commit` (the very proposal it accepted, still its newest)
//!    makes an acceptor run it: [`Event::Formed`]. No Commit within `suspect_after`: back to
//!    forming (a Commit arriving later is still taken, if nothing newer was accepted).
//! 8. **Running.** Heartbeats go to every other member every `heartbeat`. A member silent for
//!    `suspect_after`: [`Event::Lost`], then forming. [`Rendezvous::handle_ring_failure`]:
//!    forming. A Join from a member sent after it accepted this generation (or from a new
//!    incarnation of it) means it restarted or left: lost, forming. A Join from a worker outside
//!    the generation, when its replicas fit under `max_replicas` and a re-formation would take it
//!    in: [`Event::JoinRequested`], forming (growth costs one re-formation; the state stays in
//!    memory). A Heartbeat or Commit of a *higher* generation means one formed without this
//!    worker: forming. Every way out of `Running` emits [`Event::Reforming`]. Messages of a
//!    generation below this worker's promise change nothing and are counted
//!    ([`Rendezvous::fenced`]).
//! 9. **Persistence.** [`Rendezvous::restore`] rebuilds a restarted worker from its last
//!    [`AcceptorRecord`]: its committed membership and every promise since.
//!
//! # Why these rules are safe
//! Each worker accepts at most one proposal per generation (rule 4's generation test, kept
//! across restarts by rule 9), and a proposal forms only when *all* its members accepted it. So
//! two memberships formed at one generation share no worker. Every proposal after a committed
//! membership C holds a majority of C (shown below), and two majorities of C share a worker: so
//! they cannot be disjoint, and at most one membership forms per generation. For the same
//! reason, each committed membership holds a majority of the one committed before it, so the
//! job never runs as two halves.
//!
//! Why each acceptor keeps *every* proposal it accepted since its last known commit, not only
//! the newest: C1 = {0,1,2,3,4} is committed. C2 = {0,1,2} (a majority of C1) is committed
//! too, but its Commit reaches only slot 0. Slot 1 then accepts P3 = {1,2,3,4}, which fails.
//! Q4 = {1,3,4} holds a majority of C1 and of P3. Slots 3 and 4 never heard of C2; if slot 1
//! remembered only P3 it would accept Q4 as well, and Q4 would form with no majority of C2 while
//! slot 0 still runs C2. Remembering C2 makes slot 1 refuse. In general: a member of the next
//! committed membership that accepted C still holds C among its promises (only a newer commit
//! retires it), and the chain of commits guarantees such a member exists. An acceptor remembers
//! at most [`MAX_ACCEPTED`] proposals with distinct slots; when full it refuses new ones
//! ([`RejectReason::Full`]) until it learns of a commit (from a Commit, a Join or a proposal's
//! basis), trading liveness for safety in a run of failures that long.
//!
//! The first formation has nothing to be a majority of: two disjoint halves of a partitioned
//! fresh job could each form generation 1 unless `min_replicas` demands a majority of the slots
//! (see [`MembershipConfig`]).
//!
//! # Failure cases
//! - **A worker dies** (or hangs) while running: its heartbeats stop; after `suspect_after` the
//!   others see it lost, re-form at the next generation if they hold a majority of the last
//!   membership, and take the state from the lowest survivor holding the newest step.
//! - **A network partition**: each side loses the other. Only a side holding a strict majority
//!   of the last membership forms; with 2 | 2 neither does, until the partition heals and all
//!   re-form together. The side that formed has a higher generation, so the other side's late
//!   messages are fenced.
//! - **The proposer dies mid-proposal**: acceptors time out of `Promised` and form again. Their
//!   acceptances stay among their promises, so whatever forms next respects that proposal too,
//!   in case it had formed after all.
//! - **A Commit is lost**: that member times out and Joins; the others, seeing a Join sent after
//!   it accepted their generation, re-form with it.
//! - **A worker restarts**: its new process restores the record, so it keeps its promises. The
//!   split brain this prevents: with five workers, slot 2 accepts A = {0,1,2} at generation 5
//!   and crashes; restarted without its record it would accept B = {2,3,4} at generation 5 too.
//!   Both would form, and {0,1} and {3,4} would each train, with slot 2 claimed by both.
//! - **A worker is paused** (SIGSTOP, a long GC-like stall) and resumes with stale state: its
//!   old generation's messages are fenced by the others; its own timers find its peers silent
//!   (or a newer generation formed without it), so it forms again and is taken back in.
//! - **A whole-job restart**: every worker restores its record, none holds state in memory, so
//!   the next generation resumes from disk.
//! - **More workers than `max_replicas`**: the lowest slots form; the rest keep joining and
//!   are taken in when room appears (a member lost), not before.
#![warn(missing_docs)]

mod acceptor;
mod choose;
pub mod config;
pub mod membership;
pub mod message;
mod peers;
pub mod record;
pub mod rendezvous;

pub use config::{ConfigError, MembershipConfig};
pub use membership::{MAX_GENERATION, MAX_REPLICAS, MAX_SLOTS, Member, Membership, Slot, StateTag, is_majority, majority_within};
pub use message::{DecodeError, MAX_MESSAGE_BYTES, Message, RejectReason, StateSource, decode, encode};
pub use record::{AcceptorRecord, MAX_ACCEPTED, MAX_RECORD_BYTES};
pub use rendezvous::{Event, Phase, Rendezvous};
