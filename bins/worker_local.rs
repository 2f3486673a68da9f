//! A worker running several replicas (`ringsam worker --local_replicas N`): a pod that owns its
//! node's GPUs runs one replica actor per GPU, each a thread with its own device, its own loader
//! pool and its own rings (in an elastic job, each its own slot). The job's ranks are pod-major
//! (pod p's replicas are ranks p·N … p·N + N − 1), so a ring visits a node's GPUs one after
//! another and crosses between nodes once per node. Local replicas meet over in-memory pipes,
//! not loopback sockets ([`colocated`]; why not a reduction within the node first:
//! `ringsam_collective::local_link`). The process has one metrics recorder: its first replica
//! exports its steps, the others do not ([`ringsam_train::telemetry::quiet_this_thread`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;

use ringsam_collective::local_link::LocalLinks;
use ringsam_train::cluster::Colocated;

use crate::process::usage;
use crate::train_args::{TrainArgs, open_device};

/// Each local replica's device, opened: with `--device cuda`, replica i on cuda:i; with a device
/// named by ordinal (`cuda:K`), all of them on it, sharing one GPU (how a one-GPU host checks
/// local replicas: `scripts/device_check.sh replicas`); on the CPU, all of them there.
pub(crate) fn open_devices(train: &TrainArgs, pod: usize, local: usize) -> Result<Vec<Option<Arc<ringsam_kernels::Gpu>>>> {
    let device = train.device.as_str();
    if local > 1 && device.starts_with("cuda:") {
        eprintln!("ringsam: {local} local replicas share {device} (give --device cuda for one GPU each)");
    }
    (0..local)
        .map(|i| {
            let name = if device == "cuda" && local > 1 { format!("cuda:{i}") } else { device.to_string() };
            let rank = pod * local + i;
            open_device(&name, train.precision.as_deref(), train.conv_impl.as_deref(), &|l| eprintln!("ringsam: rank {rank}: {l}"))
        })
        .collect()
}

/// Runs `replica(i, its device)` for each local replica (ranks `first_rank + i`), each on a
/// thread of its own (one replica: on this one). Each failure is logged with its rank as it
/// happens (the first in time is often the cause of the others' ring errors); the first by rank
/// is returned once every replica has ended.
pub(crate) fn run_each<F>(gpus: Vec<Option<Arc<ringsam_kernels::Gpu>>>, first_rank: usize, stop: &AtomicBool, replica: F) -> Result<()>
where
    F: Fn(usize, Option<Arc<ringsam_kernels::Gpu>>) -> Result<()> + Sync,
{
    if gpus.len() == 1 {
        return replica(0, gpus.into_iter().next().flatten());
    }
    let replica = &replica;
    std::thread::scope(|s| {
        let threads: Vec<_> = gpus
            .into_iter()
            .enumerate()
            .map(|(i, gpu)| {
                let rank = first_rank + i;
                std::thread::Builder::new().name(format!("replica-{rank}")).spawn_scoped(s, move || {
                    if i > 0 {
                        ringsam_train::telemetry::quiet_this_thread();
                    }
                    let result = replica(i, gpu);
                    if let Err(e) = &result {
                        eprintln!("ringsam: rank {rank}: failed: {e:#}");
                    }
                    result
                })
            })
            .collect::<Result<_, _>>()
            // The replicas already started stop waiting for the one that did not.
            .inspect_err(|_| stop.store(true, Ordering::SeqCst))?;
        let results: Vec<Result<()>> = threads
            .into_iter()
            .zip(first_rank..)
            .map(|(h, rank)| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("rank {rank}'s thread panicked"))))
            .collect();
        results.into_iter().collect()
    })
}

/// Which of the job's `ranks` (or elastic slots, numbered alike) live in pod `pod`'s process, and
/// the mailboxes their pipes meet at; none for a single replica (nothing to meet).
pub(crate) fn colocated(ranks: usize, pod: usize, local: usize) -> Option<Colocated> {
    (local > 1).then(|| Colocated { links: LocalLinks::new(), here: (0..ranks).map(|r| r / local == pod).collect() })
}

/// What the log says of a replica's pipes: which ranks of the ring meet in this process.
pub(crate) fn pipes_note(colocated: Option<&Colocated>) -> String {
    let Some(c) = colocated else { return String::new() };
    let here: Vec<String> = c.here.iter().enumerate().filter(|(_, h)| **h).map(|(r, _)| r.to_string()).collect();
    format!(" (ranks {} meet over in-process pipes)", here.join(", "))
}

/// The job's ring addresses, rank-major, from one address per pod: replica i of a pod listens on
/// the pod's port + 2i (the group ring, when there is one, on the port after that).
pub(crate) fn replica_addresses(pods: &[String], local: usize) -> Result<Vec<String>> {
    if local == 1 {
        return Ok(pods.to_vec());
    }
    let mut out = Vec::with_capacity(pods.len() * local);
    for addr in pods {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| usage(format!("peer {addr:?}: expected host:port")))?;
        for i in 0..local {
            let p = (port as usize + 2 * i < u16::MAX as usize)
                .then_some(port as usize + 2 * i)
                .ok_or_else(|| usage(format!("peer {addr}: {local} local replicas need ports up to {}", port as usize + 2 * local - 1)))?;
            out.push(format!("{host}:{p}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_replicas_are_the_ranks_it_meets_over_pipes() {
        let c = colocated(6, 1, 3).unwrap();
        assert_eq!(c.here, [false, false, false, true, true, true]);
        assert_eq!(pipes_note(Some(&c)), " (ranks 3, 4, 5 meet over in-process pipes)");
        assert!(colocated(4, 0, 1).is_none(), "one replica has no one to meet in its process");
    }

    #[test]
    fn local_replicas_take_every_other_port_pod_by_pod() {
        let pods = ["a.svc:29500".to_string(), "[::1]:7000".to_string()];
        let got = replica_addresses(&pods, 3).unwrap();
        assert_eq!(got, ["a.svc:29500", "a.svc:29502", "a.svc:29504", "[::1]:7000", "[::1]:7002", "[::1]:7004"]);
        assert_eq!(replica_addresses(&pods, 1).unwrap(), pods);
        assert!(replica_addresses(&["h:65530".into()], 4).unwrap_err().to_string().contains("ports up to"));
        assert!(replica_addresses(&["nohost".into()], 2).unwrap_err().to_string().contains("host:port"));
    }
}
