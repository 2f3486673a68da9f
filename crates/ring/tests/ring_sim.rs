//! The ring protocol with no network: `RingSim` moves frames between `Ring`s with simulated
//! latency and time (quinn-proto's test pattern). Deterministic; no sockets, no sleeps.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ringsam_ring::frame::HEADER_LEN;
use ringsam_ring::{FrameHeader, Loan, OpId, ReduceOp, Ring, RingConfig, RingError, RingEvent};

type PlaceKey = (u16, u32, u64, u32, u32, u32);

fn place_key(h: &FrameHeader) -> PlaceKey {
    (h.ring, h.generation, h.op, h.step, h.chunk, h.len)
}

struct RingSim {
    rings: Vec<Ring>,
    links: Vec<VecDeque<(Instant, Vec<u8>)>>, // links[r]: frames in flight from r to r's next
    time: Instant,
    latency: Duration,
    dropped_from: Option<usize>,
    events: Vec<Vec<RingEvent>>,
    /// Streams per link (the socket drivers' stripes): frames go on stripe (op + chunk) mod k,
    /// or a random one with `stripe_at_random` (breaking the rule, to show the test notices).
    stripes: u64,
    stripe_at_random: bool,
    /// Extra delay per frame, uniform in [0, jitter), drawn from `seed`; each stripe stays FIFO.
    jitter: Duration,
    seed: u64,
    stripe_free: Vec<Vec<Instant>>,
    /// Frames delivered before one sent earlier on the same link.
    overtakes: usize,
    /// Deliver bodies in random pieces through `handle_frame_parts`: `Some(true)` cut between
    /// values (as the QUIC driver does), `Some(false)` anywhere.
    cut_bodies: Option<bool>,
    /// Receive into chunks the rings lend out (as the TCP driver does), except for one delivery
    /// in `cancel_one_in` (taken the usual way, the loan handed back first: a frame that
    /// overtook its lending); loans per receiving rank, and how many deliveries used one.
    place: bool,
    cancel_one_in: u64,
    loans: Vec<HashMap<PlaceKey, Loan>>,
    placed: usize,
    cancelled: usize,
    /// Move staged sums out before writing them (as the QUIC driver does), and how many were.
    take_staged: bool,
    staged_sent: usize,
}

impl RingSim {
    fn new(world: usize, chunk: usize) -> Self {
        let rings = (0..world)
            .map(|r| Ring::new(RingConfig { chunk, peer_timeout: Duration::from_secs(10), ..RingConfig::new(r, world) }))
            .collect();
        RingSim {
            rings,
            links: vec![VecDeque::new(); world],
            time: Instant::now(),
            latency: Duration::from_micros(50),
            dropped_from: None,
            events: vec![Vec::new(); world],
            stripes: 1,
            stripe_at_random: false,
            jitter: Duration::ZERO,
            seed: 1,
            stripe_free: Vec::new(),
            overtakes: 0,
            cut_bodies: None,
            place: false,
            cancel_one_in: 0,
            loans: (0..world).map(|_| HashMap::new()).collect(),
            placed: 0,
            cancelled: 0,
            take_staged: false,
            staged_sent: 0,
        }
    }

    /// `ops` operations on `inputs(world, len)` (times op + 1), rank 0 starting them only after
    /// `steps_before` steps of the others' frames (so it meets early frames); every rank's
    /// results, rank by rank, op by op.
    fn run_late_start(&mut self, len: usize, ops: u64, reduce: ReduceOp, steps_before: usize) -> Vec<Vec<f32>> {
        let world = self.rings.len();
        let data = inputs(world, len);
        let scaled = |r: usize, op: u64| data[r].iter().map(|v| v * (op + 1) as f32).collect::<Vec<f32>>();
        for op in 0..ops {
            for r in 1..world {
                self.rings[r].start(self.time, OpId(op), scaled(r, op), reduce).unwrap();
            }
        }
        for _ in 0..steps_before {
            self.step();
            self.time += Duration::from_micros(60);
        }
        for op in 0..ops {
            self.rings[0].start(self.time, OpId(op), scaled(0, op), reduce).unwrap();
        }
        self.drive();
        (0..world)
            .flat_map(|r| (0..ops).map(move |op| (r, op)))
            .map(|(r, op)| self.rings[r].take_result(OpId(op)).unwrap_or_else(|| panic!("rank {r} op {op}: {:?}", self.events[r])))
            .collect()
    }

    /// Rank `r`'s next frame into `buf`, a staged sum moved out of the ring when `take_staged`;
    /// false when nothing is queued.
    fn next_send(&mut self, r: usize, buf: &mut Vec<u8>) -> bool {
        if self.take_staged
            && let Some((h, _)) = self.rings[r].peek_send()
            && let Some(sum) = self.rings[r].take_staged()
        {
            buf.clear();
            h.encode(buf);
            buf.extend(sum.iter().flat_map(|v| v.to_le_bytes()));
            self.rings[r].pop_send();
            self.staged_sent += 1;
            return true;
        }
        self.rings[r].poll_send(buf).is_some()
    }

    fn next_random(&mut self) -> u64 {
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.seed >> 33
    }

    /// When a frame sent now from rank `r` arrives: after the link's latency and jitter, and not
    /// before the previous frame on its stripe.
    fn arrival(&mut self, r: usize, frame: &[u8]) -> Instant {
        let k = self.stripes.max(1);
        if self.stripe_free.len() != self.rings.len() {
            self.stripe_free = vec![vec![self.time; k as usize]; self.rings.len()];
        }
        let h = FrameHeader::decode(frame[..HEADER_LEN].try_into().unwrap(), 1 << 30).unwrap();
        let stripe = if self.stripe_at_random { self.next_random() % k } else { h.op.wrapping_add(h.chunk as u64) % k } as usize;
        let jitter_us = self.jitter.as_micros() as u64;
        let extra = if jitter_us == 0 { 0 } else { self.next_random() % jitter_us };
        let t = (self.time + self.latency + Duration::from_micros(extra)).max(self.stripe_free[r][stripe]);
        self.stripe_free[r][stripe] = t;
        t
    }

    /// Drains sends into links, delivers due frames, handles timeouts, collects events.
    /// Returns whether anything happened.
    fn step(&mut self) -> bool {
        let mut progress = false;
        let n = self.rings.len();
        for r in 0..n {
            let mut buf = Vec::new();
            while self.next_send(r, &mut buf) {
                while let Some((h, loan)) = self.rings[r].take_lendable() {
                    assert!(self.loans[r].insert(place_key(&h), loan).is_none(), "lent twice: {h:?}");
                }
                if self.dropped_from != Some(r) {
                    let t = self.arrival(r, &buf);
                    self.links[r].push_back((t, buf.clone()));
                }
                progress = true;
            }
        }
        for r in 0..n {
            let to = (r + 1) % n;
            // Due frames in arrival order (the first sent among equal times).
            while let Some(i) = (0..self.links[r].len()).filter(|&i| self.links[r][i].0 <= self.time).min_by_key(|&i| self.links[r][i].0) {
                self.overtakes += usize::from(i > 0);
                let (_, bytes) = self.links[r].remove(i).unwrap();
                let h = FrameHeader::decode(bytes[..HEADER_LEN].try_into().unwrap(), 1 << 30).unwrap();
                let body = &bytes[HEADER_LEN..];
                if let Some(mut loan) = self.loans[to].remove(&place_key(&h)) {
                    if self.cancel_one_in > 0 && self.next_random().is_multiple_of(self.cancel_one_in) {
                        self.rings[to].cancel_placement(&h, loan);
                        self.cancelled += 1;
                        let _ = self.rings[to].handle_frame(self.time, h, body);
                    } else {
                        loan.bytes_mut().copy_from_slice(body);
                        self.rings[to].finish_placement(self.time, h, loan);
                        self.placed += 1;
                    }
                } else if let Some(whole_values) = self.cut_bodies {
                    let mut parts = Vec::new();
                    let mut at = 0;
                    while at < body.len() {
                        let n = (1 + self.next_random() as usize % 24) * if whole_values { 4 } else { 1 };
                        let n = n.min(body.len() - at);
                        parts.push(&body[at..at + n]);
                        at += n;
                    }
                    let _ = self.rings[to].handle_frame_parts(self.time, h, &parts);
                } else {
                    let _ = self.rings[to].handle_frame(self.time, h, body);
                }
                progress = true;
            }
        }
        for r in 0..n {
            self.rings[r].handle_timeout(self.time);
            while let Some(e) = self.rings[r].poll_event() {
                self.events[r].push(e);
                progress = true;
            }
        }
        progress
    }

    /// Runs until quiet, advancing simulated time to the next delivery or timer.
    fn drive(&mut self) {
        for _ in 0..100_000 {
            if self.step() {
                continue;
            }
            let next_delivery = self.links.iter().flat_map(|l| l.iter().map(|(t, _)| *t)).min();
            let next_timer = self.rings.iter().filter_map(|r| r.poll_timeout()).min();
            match next_delivery.into_iter().chain(next_timer).min() {
                Some(t) => self.time = t.max(self.time),
                None => return,
            }
        }
        panic!("ring did not settle");
    }
}

fn inputs(world: usize, len: usize) -> Vec<Vec<f32>> {
    (0..world).map(|r| (0..len).map(|i| ((i * 7 + r * 13) % 17) as f32 * 0.25 - 2.0 + r as f32 * 1e-3).collect()).collect()
}

fn run(world: usize, len: usize, chunk: usize, reduce: ReduceOp) {
    let mut sim = RingSim::new(world, chunk);
    let data = inputs(world, len);
    for (r, d) in data.iter().enumerate() {
        sim.rings[r].start(sim.time, OpId(1), d.clone(), reduce).unwrap();
    }
    sim.drive();
    let results: Vec<Vec<f32>> = (0..world)
        .map(|r| {
            assert_eq!(sim.events[r], vec![RingEvent::OpDone(OpId(1))], "world {world} len {len} rank {r}");
            sim.rings[r].take_result(OpId(1)).unwrap()
        })
        .collect();
    for r in 1..world {
        assert!(
            results[r].iter().zip(&results[0]).all(|(a, b)| a.to_bits() == b.to_bits()),
            "world {world} len {len}: rank {r} differs bitwise from rank 0"
        );
    }
    for i in 0..len {
        let mut want: f64 = data.iter().map(|d| d[i] as f64).sum();
        if reduce == ReduceOp::Mean {
            want /= world as f64;
        }
        assert!((results[0][i] as f64 - want).abs() < 1e-4, "world {world} len {len} i {i}: {} vs {want}", results[0][i]);
    }
}

#[test]
fn world_sizes_1_to_9_and_awkward_lengths() {
    for world in 1usize..=9 {
        for len in [0, 1, world.saturating_sub(1), world, world + 1, 37, 1000] {
            for chunk in [1, 3, 64] {
                run(world, len, chunk, ReduceOp::Sum);
            }
            run(world, len, 5, ReduceOp::Mean);
        }
    }
}

#[test]
fn several_operations_in_flight_and_started_out_of_step() {
    let world = 4;
    let mut sim = RingSim::new(world, 8);
    let data = inputs(world, 100);
    // Ranks 0..3 start op 1 and op 2 now; rank 3 only later, after others' frames have arrived.
    for (ring, d) in sim.rings.iter_mut().zip(&data).take(3) {
        ring.start(sim.time, OpId(1), d.clone(), ReduceOp::Sum).unwrap();
        ring.start(sim.time, OpId(2), d.iter().map(|v| v * 2.0).collect(), ReduceOp::Sum).unwrap();
    }
    for _ in 0..5 {
        sim.step();
        sim.time += Duration::from_micros(60);
    }
    sim.rings[3].start(sim.time, OpId(2), data[3].iter().map(|v| v * 2.0).collect(), ReduceOp::Sum).unwrap();
    sim.rings[3].start(sim.time, OpId(1), data[3].clone(), ReduceOp::Sum).unwrap();
    sim.drive();
    for r in 0..world {
        let a = sim.rings[r].take_result(OpId(1)).unwrap();
        let b = sim.rings[r].take_result(OpId(2)).unwrap();
        for i in 0..100 {
            let want: f32 = data.iter().map(|d| d[i]).sum();
            assert!((a[i] - want).abs() < 1e-4 && (b[i] - 2.0 * want).abs() < 1e-3);
        }
    }
}

/// Several operations over striped links with jitter, so frames overtake each other: with the
/// drivers' rule (stripe (op + chunk) mod k, each chunk's passes in order) and with stripes
/// picked at random (any frame may overtake any other). Both must give bitwise the results of
/// one in-order stream: the ring needs no order between frames at all, because a chunk's
/// all-gather value can only be made after this rank forwarded its reduce-scatter sum.
#[test]
fn striped_and_reordered_links_give_the_in_order_results() {
    let run = |stripes: u64, at_random: bool, seed: u64| -> Result<(Vec<Vec<f32>>, usize), String> {
        let (world, len, ops) = (5, 203, 3u64);
        let mut sim = RingSim::new(world, 7);
        (sim.stripes, sim.stripe_at_random, sim.seed) = (stripes, at_random, seed);
        sim.jitter = if stripes > 1 { Duration::from_micros(400) } else { Duration::ZERO };
        let data = inputs(world, len);
        for op in 0..ops {
            for (r, d) in data.iter().enumerate() {
                sim.rings[r].start(sim.time, OpId(op), d.iter().map(|v| v * (op + 1) as f32).collect(), ReduceOp::Sum).unwrap();
            }
        }
        sim.drive();
        let mut out = Vec::new();
        for r in 0..world {
            for op in 0..ops {
                if !sim.events[r].contains(&RingEvent::OpDone(OpId(op))) {
                    return Err(format!("rank {r} op {op}: {:?}", sim.events[r]));
                }
                out.push(sim.rings[r].take_result(OpId(op)).unwrap());
            }
        }
        Ok((out, sim.overtakes))
    };
    let (in_order, none) = run(1, false, 1).unwrap();
    assert_eq!(none, 0);
    assert!(in_order.iter().all(|v| v.len() == 203 && v[10] != 0.0), "{} results", in_order.len());
    for seed in 1..=8 {
        for at_random in [false, true] {
            let (striped, overtakes) = run(3, at_random, seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert!(overtakes > 10, "seed {seed}: only {overtakes} frames overtook another");
            for (a, b) in striped.iter().zip(&in_order) {
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "seed {seed} random {at_random}: results differ");
            }
        }
    }
}

/// Bodies handed over in pieces (as QUIC's chunks arrive) reduce to bitwise the results of whole
/// bodies, whether the pieces are cut between values or inside them; early frames (for
/// operations a rank starts late) too.
#[test]
fn bodies_in_pieces_give_the_results_of_whole_bodies() {
    let run = |cut: Option<bool>, reduce: ReduceOp| -> Vec<Vec<f32>> {
        let mut sim = RingSim::new(4, 29);
        sim.cut_bodies = cut;
        sim.run_late_start(517, 3, reduce, 4)
    };
    for reduce in [ReduceOp::Sum, ReduceOp::Mean] {
        let whole = run(None, reduce);
        for cut in [Some(true), Some(false)] {
            let pieces = run(cut, reduce);
            assert_eq!(pieces.len(), whole.len());
            for (a, b) in pieces.iter().zip(&whole) {
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{cut:?} {reduce:?}: results differ");
            }
        }
    }
}

/// Frames received straight into lent chunks (the TCP driver's all-gather path), some handed
/// back and taken the usual way instead, over striped links with jitter and operations started
/// out of step: bitwise the results of plain delivery, with no chunk lent twice.
#[test]
fn received_into_lent_chunks_gives_the_usual_results() {
    let run = |world: usize, len: usize, place: bool, cancel_one_in: u64, seed: u64| -> (Vec<Vec<f32>>, usize, usize) {
        let mut sim = RingSim::new(world, 13);
        (sim.place, sim.cancel_one_in, sim.seed, sim.stripes) = (place, cancel_one_in, seed, 3);
        sim.rings.iter_mut().for_each(|r| r.set_lending(place));
        sim.jitter = Duration::from_micros(300);
        let out = sim.run_late_start(len, 3, ReduceOp::Sum, 3);
        assert!(sim.loans.iter().all(HashMap::is_empty) || !place, "loans left over");
        (out, sim.placed, sim.cancelled)
    };
    for world in 2..=6 {
        for len in [world, 97, 1000] {
            let (plain, _, _) = run(world, len, false, 0, 1);
            for seed in 1..=3 {
                for cancel_one_in in [0, 3] {
                    let (placed, n_placed, n_cancelled) = run(world, len, true, cancel_one_in, seed);
                    for (a, b) in placed.iter().zip(&plain) {
                        assert!(
                            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "world {world} len {len} seed {seed}: results differ"
                        );
                    }
                    if world > 2 && len >= 97 {
                        assert!(n_placed > 10, "world {world} len {len}: only {n_placed} frames received into loans");
                        assert!(cancel_one_in == 0 || n_cancelled > 0, "world {world} len {len}: no loan handed back");
                    }
                }
            }
        }
    }
}

/// Intermediate reduce-scatter sums staged in buffers of their own (the QUIC driver's path),
/// moved out or copied by `poll_send`, over striped links with jitter, bodies in pieces and
/// operations started out of step: bitwise the results of sums made in place.
#[test]
fn staged_sums_give_the_results_of_sums_in_place() {
    let run = |world: usize, len: usize, staging: Option<bool>, reduce: ReduceOp, seed: u64| -> (Vec<Vec<f32>>, usize) {
        let mut sim = RingSim::new(world, 11);
        (sim.seed, sim.stripes, sim.cut_bodies) = (seed, 2, Some(true));
        sim.jitter = Duration::from_micros(300);
        sim.take_staged = staging == Some(true);
        sim.rings.iter_mut().for_each(|r| r.set_staging(staging.is_some()));
        let out = sim.run_late_start(len, 3, reduce, 3);
        (out, sim.staged_sent)
    };
    for world in 2..=6 {
        for len in [world, 97, 1000] {
            for reduce in [ReduceOp::Sum, ReduceOp::Mean] {
                let (in_place, _) = run(world, len, None, reduce, 1);
                for (staging, seed) in [(Some(true), 1), (Some(true), 2), (Some(false), 3)] {
                    let (staged, sent) = run(world, len, staging, reduce, seed);
                    for (a, b) in staged.iter().zip(&in_place) {
                        assert!(
                            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "world {world} len {len} {staging:?}: results differ"
                        );
                    }
                    // Worlds of 3 and more have intermediate reduce-scatter steps.
                    if staging == Some(true) && world > 2 && len >= 97 {
                        assert!(sent > 10, "world {world} len {len}: only {sent} staged sums sent");
                    }
                    if world == 2 {
                        assert_eq!(sent, 0, "a world of 2 has no intermediate sums");
                    }
                }
            }
        }
    }
}

#[test]
fn silent_peer_fails_every_pending_op_on_every_survivor() {
    let world = 5;
    let mut sim = RingSim::new(world, 4);
    sim.dropped_from = Some(2); // rank 2's frames are lost: it is dead to the ring
    let start = sim.time;
    for r in 0..world {
        sim.rings[r].start(sim.time, OpId(7), vec![1.0; 50], ReduceOp::Sum).unwrap();
        sim.rings[r].start(sim.time, OpId(8), vec![1.0; 50], ReduceOp::Sum).unwrap();
    }
    sim.drive();
    assert!(sim.time - start <= Duration::from_secs(11), "failed after {:?}", sim.time - start);
    for r in [0, 1, 3, 4] {
        let failed: Vec<_> = sim.events[r].iter().filter(|e| matches!(e, RingEvent::OpFailed(_, _))).collect();
        assert_eq!(failed.len(), 2, "rank {r}: {:?}", sim.events[r]);
    }
    // Rank 3 is the one whose previous rank went silent.
    assert!(
        sim.events[3].iter().any(|e| matches!(e, RingEvent::OpFailed(_, RingError::PeerTimeout { peer: 2, .. }))),
        "{:?}",
        sim.events[3]
    );
    // A failed ring refuses new work until a new generation is formed.
    assert!(sim.rings[0].start(sim.time, OpId(9), vec![1.0], ReduceOp::Sum).is_err());
}

#[test]
fn idle_time_is_not_silence() {
    let mut sim = RingSim::new(3, 4);
    sim.time += Duration::from_secs(3600);
    run_once(&mut sim, 1);
    sim.time += Duration::from_secs(3600);
    run_once(&mut sim, 2);
}

fn run_once(sim: &mut RingSim, op: u64) {
    for r in 0..3 {
        sim.rings[r].start(sim.time, OpId(op), vec![1.0; 10], ReduceOp::Sum).unwrap();
    }
    sim.drive();
    for r in 0..3 {
        assert_eq!(sim.rings[r].take_result(OpId(op)).unwrap(), vec![3.0; 10]);
    }
}

#[test]
fn malformed_and_stale_frames() {
    let mut ring = Ring::new(RingConfig::new(1, 3));
    let now = Instant::now();
    ring.start(now, OpId(1), vec![0.0; 30], ReduceOp::Sum).unwrap();
    // A frame from an older generation is dropped silently.
    let stale = FrameHeader { kind: ringsam_ring::FrameKind::Data, ring: 0, generation: 9, step: 0, op: 1, chunk: 0, len: 40 };
    ring.handle_frame(now, stale, &[0u8; 40]).unwrap();
    assert_eq!(ring.pending(), 1);
    // A chunk of the wrong size is a protocol violation: everything pending fails.
    let bad = FrameHeader { generation: 0, len: 8, ..stale };
    assert!(matches!(ring.handle_frame(now, bad, &[0u8; 8]), Err(RingError::Protocol { peer: 0, .. })));
    assert!(matches!(ring.poll_event(), Some(RingEvent::OpFailed(OpId(1), RingError::Protocol { .. }))));
    // Frames for too many unstarted operations are refused rather than buffered without bound.
    let mut ring = Ring::new(RingConfig { max_early_ops: 2, ..RingConfig::new(1, 3) });
    for op in 0..2 {
        ring.handle_frame(now, FrameHeader { op, generation: 0, ..stale }, &[0u8; 40]).unwrap();
    }
    assert!(ring.handle_frame(now, FrameHeader { op: 5, generation: 0, ..stale }, &[0u8; 40]).is_err());
}

/// Sub-rings (`inner_group_size`): six ranks in two groups of three each reduce within their
/// group only; a group is an ordinary ring of its members, tagged with its own ring id.
#[test]
fn sub_rings_reduce_within_consecutive_groups() {
    use ringsam_ring::group_of;
    let (world, size) = (6, 3);
    let mut sims: Vec<RingSim> = Vec::new();
    let mut expected = Vec::new();
    for g in 0..world / size {
        let mut sim = RingSim::new(size, 4);
        for r in g * size..(g + 1) * size {
            let grp = group_of(r, world, size).unwrap();
            let cfg = RingConfig { ring_id: grp.id, chunk: 4, ..RingConfig::new(grp.position, size) };
            sim.rings[grp.position] = Ring::new(cfg);
            sim.rings[grp.position].start(sim.time, OpId(1), vec![(r + 1) as f32; 10], ReduceOp::Mean).unwrap();
        }
        expected.push(((g * size + 1)..=(g + 1) * size).map(|v| v as f32).sum::<f32>() / size as f32);
        sims.push(sim);
    }
    for (g, sim) in sims.iter_mut().enumerate() {
        sim.drive();
        for p in 0..size {
            assert_eq!(sim.rings[p].take_result(OpId(1)).unwrap(), vec![expected[g]; 10], "group {g} position {p}");
        }
    }
}

/// Found in review: duplicate frames, and frames for an operation that needs none.
#[test]
fn duplicate_and_needless_frames_are_violations_not_panics() {
    let now = Instant::now();
    let h = FrameHeader { kind: ringsam_ring::FrameKind::Data, ring: 0, generation: 0, step: 0, op: 1, chunk: 0, len: 40 };
    let mut ring = Ring::new(RingConfig { chunk: 10, ..RingConfig::new(1, 3) });
    ring.start(now, OpId(1), vec![0.0; 30], ReduceOp::Sum).unwrap();
    ring.handle_frame(now, h, &[0u8; 40]).unwrap();
    assert!(matches!(ring.handle_frame(now, h, &[0u8; 40]), Err(RingError::Protocol { .. })), "a repeated frame must not be summed twice");
    // A frame that arrives early for an operation that turns out to be empty.
    let mut ring = Ring::new(RingConfig::new(1, 3));
    ring.handle_frame(now, FrameHeader { len: 0, ..h }, &[]).unwrap();
    assert!(ring.start(now, OpId(1), Vec::new(), ReduceOp::Sum).is_err());
    // Early frames are bounded in bytes too.
    let mut ring = Ring::new(RingConfig { max_early_bytes: 100, ..RingConfig::new(1, 3) });
    ring.handle_frame(now, FrameHeader { len: 80, ..h }, &[0u8; 80]).unwrap();
    assert!(ring.handle_frame(now, FrameHeader { len: 80, chunk: 1, ..h }, &[0u8; 80]).is_err());
}

/// A loan handed back for another frame than its own releases nothing: the frame it was lent
/// for stays lent (so cannot also arrive the usual way), and the loan handed back for its own
/// frame releases it.
#[test]
fn a_loan_handed_back_for_another_frame_releases_nothing() {
    let now = Instant::now();
    let lent_ring = || {
        let mut ring = Ring::new(RingConfig { chunk: 4, ..RingConfig::new(0, 2) });
        ring.set_lending(true);
        ring.start(now, OpId(0), vec![1.0; 16], ReduceOp::Sum).unwrap();
        let mut buf = Vec::new();
        while ring.poll_send(&mut buf).is_some() {}
        let (ha, a) = ring.take_lendable().expect("a chunk to lend");
        let (hb, b) = ring.take_lendable().expect("a second chunk to lend");
        assert!(ring.take_lendable().is_none(), "each chunk is lent once");
        assert_ne!((ha.step, ha.chunk), (hb.step, hb.chunk));
        (ring, ha, a, b)
    };
    let body = vec![0u8; 16];

    let (mut ring, ha, a, b) = lent_ring();
    ring.cancel_placement(&ha, b);
    assert!(ring.handle_frame(now, ha, &body).is_err(), "still lent, so a second copy of the frame");
    drop(a);

    let (mut ring, ha, a, _b) = lent_ring();
    ring.cancel_placement(&ha, a);
    ring.handle_frame(now, ha, &body).expect("released, so the frame is taken as usual");
}

/// Storage the ring does not allocate (as a GPU replica's pinned host buffers will be): a ring
/// reduces in it, in place, and gives the same storage back, with the results a `Vec` gets.
#[test]
fn foreign_storage_is_reduced_in_place_and_given_back() {
    struct Pinned {
        values: Box<[f32]>,
        owner: usize,
    }
    // SAFETY: a boxed slice never moves; the pointer is valid for its length.
    unsafe impl ringsam_ring::Values for Pinned {
        fn values_ptr(&mut self) -> *mut f32 {
            self.values.as_mut_ptr()
        }
        fn values_len(&self) -> usize {
            self.values.len()
        }
        fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
            self
        }
    }
    let (world, len) = (4, 1000);
    let data = inputs(world, len);
    let mut sim = RingSim::new(world, 64);
    let mut addresses = Vec::new();
    for (r, d) in data.iter().enumerate() {
        let storage = Pinned { values: d.clone().into_boxed_slice(), owner: r };
        addresses.push(storage.values.as_ptr() as usize);
        sim.rings[r].start_values(sim.time, OpId(1), storage, ReduceOp::Sum).unwrap();
    }
    sim.drive();
    let mut plain = RingSim::new(world, 64);
    for (r, d) in data.iter().enumerate() {
        plain.rings[r].start(plain.time, OpId(1), d.clone(), ReduceOp::Sum).unwrap();
    }
    plain.drive();
    for (r, &address) in addresses.iter().enumerate() {
        let back = sim.rings[r].take_values(OpId(1)).unwrap().into_any().downcast::<Pinned>().unwrap();
        assert_eq!((back.owner, back.values.as_ptr() as usize), (r, address), "rank {r}: not the storage it was given");
        let want = plain.rings[r].take_result(OpId(1)).unwrap();
        assert!(back.values.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "rank {r}: differs from a Vec's result");
    }
}
