//! `ringsam worker --min_replicas`: one worker of an elastic job ([`ringsam_train::elastic`]),
//! its flags checked and turned into an [`ElasticConfig`]. The membership protocol listens on UDP
//! at the worker's ring port + 1.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use ringsam_train::elastic::{ElasticConfig, train_elastic};
use ringsam_train::run::RunOptions;

use crate::process::{cluster_secret, usage};
use crate::train_cmds::{RingLinks, WorkerArgs, print_summary};

/// One worker of an elastic job ([`ringsam_train::elastic`]): `rank` is its slot, `names` every
/// slot's ring address.
pub(crate) fn worker_elastic(
    args: &WorkerArgs,
    cfg: &ringsam_train::config::TrainConfig,
    slot: usize,
    min: u32,
    names: Vec<String>,
    RingLinks { transport, colocated }: RingLinks,
    opts: RunOptions,
) -> Result<()> {
    if !(0.05..=60.0).contains(&args.heartbeat_seconds) {
        return Err(usage(format!("--heartbeat_seconds {} must be in [0.05, 60]", args.heartbeat_seconds)));
    }
    if !(0.0..=3600.0).contains(&args.rendezvous_settle_seconds) {
        return Err(usage(format!("--rendezvous_settle_seconds {} must be in [0, 3600]", args.rendezvous_settle_seconds)));
    }
    if cfg.inner_group_size.is_some() {
        return Err(usage("--inner_group_size is not supported with --min_replicas (elastic jobs)"));
    }
    let control_addrs = names.iter().map(|n| control_address(n)).collect::<Result<Vec<_>>>()?;
    let listen_port = control_addrs[slot].rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).unwrap_or(0);
    let max = cfg.max_replicas.unwrap_or(names.len());
    let ecfg = ElasticConfig {
        slot: slot as u32,
        slots: names.len() as u32,
        min_replicas: min,
        max_replicas: u32::try_from(max).map_err(|_| usage(format!("--max_replicas {max} is too large")))?,
        heartbeat: Duration::from_secs_f64(args.heartbeat_seconds),
        settle: Duration::from_secs_f64(args.rendezvous_settle_seconds),
        control_listen: SocketAddr::from(([0, 0, 0, 0], listen_port)),
        control_addrs,
        ring_addrs: names,
        secret: cluster_secret()?,
        transport,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        peer_timeout: Duration::from_secs(cfg.ring_timeout_seconds),
        on_refusal: Some(crate::process::refusal_log(format!("slot {slot}"))),
        colocated,
    };
    let log = |line: &str| eprintln!("ringsam: slot {slot}: {line}");
    if let Some(n) = std::env::var("RINGSAM_RESTARTS").ok().and_then(|v| v.parse().ok()) {
        ringsam_train::telemetry::restarts(n); // set by `ringsam launch --max_restarts`
    }
    log(&format!("elastic worker {slot} of {}: {min} to {max} replicas", ecfg.slots));
    let summary = train_elastic(cfg, &ecfg, &opts, &mut |l| log(l))
        .with_context(|| format!("slot {slot}: training {} on {}", cfg.model_name, cfg.dataset))?;
    print_summary(&summary);
    Ok(())
}

/// A slot's membership (UDP) address: its ring address's host, the ring port + 1.
fn control_address(ring: &str) -> Result<String> {
    let (host, port) = ring.rsplit_once(':').with_context(|| format!("peer address {ring:?} has no :port"))?;
    let port: u16 = port.parse().with_context(|| format!("peer address {ring:?}: bad port"))?;
    let next = port.checked_add(1).with_context(|| format!("peer address {ring:?}: the membership port {port} + 1 passes 65535"))?;
    Ok(format!("{host}:{next}"))
}
