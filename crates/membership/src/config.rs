//! [`MembershipConfig`]: the fixed parameters of one worker's rendezvous, checked once.

use std::time::Duration;

use crate::membership::{MAX_REPLICAS, MAX_SLOTS, Slot};

/// Why a configuration (or a record given with it) cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range, or two values contradict each other.
    #[error("membership config: {0}")]
    Invalid(String),
    /// The acceptor record handed to [`Rendezvous::restore`](crate::Rendezvous::restore) does not
    /// belong to this worker or this job.
    #[error("acceptor record: {0}")]
    Record(String),
}

/// One worker's rendezvous parameters. Build with [`MembershipConfig::new`]; a field changed
/// afterwards is checked again by [`Rendezvous::new`](crate::Rendezvous::new).
///
/// Choosing `min_replicas`: a job whose workers have no membership yet (a fresh start, or every
/// record lost) is bound by nothing but `min_replicas`, so if it allowed half the slots or fewer,
/// two disjoint halves of a partitioned fresh job could each form generation 1. Set it so any
/// formation holds a strict majority of the slots (with one replica per worker: `slots / 2 + 1`)
/// unless the job may really run on a minority. Once a generation has formed, the majority rules
/// of the crate docs bind every later one, whatever `min_replicas` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// This worker.
    pub slot: Slot,
    /// Ranks this worker owns (L ≥ 1; today 1).
    pub replicas: u32,
    /// Slots in the job: workers are `0..slots`.
    pub slots: u32,
    /// The fewest ranks a formation may have.
    pub min_replicas: u32,
    /// The most ranks a formation may have: more joiners than this wait outside.
    pub max_replicas: u32,
    /// How often Joins (while forming) and Heartbeats (while running) are sent.
    pub heartbeat: Duration,
    /// Silence after which a peer counts as gone, and how long a proposal or a promise waits.
    pub suspect_after: Duration,
    /// How long a leader with at least `min_replicas` but fewer than `max_replicas` waits for
    /// more joiners, after the last change of who is there, before it proposes.
    pub settle: Duration,
}

impl MembershipConfig {
    /// A configuration with `suspect_after` = 3 × `heartbeat` (one late heartbeat is not a loss;
    /// three missed ones are) and `settle` = 2 × `heartbeat`; checked.
    pub fn new(
        slot: Slot,
        replicas: u32,
        slots: u32,
        min_replicas: u32,
        max_replicas: u32,
        heartbeat: Duration,
    ) -> Result<Self, ConfigError> {
        let cfg = MembershipConfig {
            slot,
            replicas,
            slots,
            min_replicas,
            max_replicas,
            heartbeat,
            suspect_after: heartbeat.saturating_mul(3),
            settle: heartbeat.saturating_mul(2),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every range and every relation between fields; the message names the flag's value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(why));
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return invalid(format!("{} slots, not 1..={MAX_SLOTS}", self.slots));
        }
        if self.slot.0 >= self.slots {
            return invalid(format!("this worker is {} but the job has slots 0..{}", self.slot, self.slots));
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return invalid(format!("{} replicas per worker, not 1..={MAX_REPLICAS}", self.replicas));
        }
        if self.min_replicas == 0 {
            return invalid("min_replicas is 0: a formation needs at least one rank".to_string());
        }
        if self.min_replicas > self.max_replicas {
            return invalid(format!("min_replicas {} is above max_replicas {}", self.min_replicas, self.max_replicas));
        }
        if self.replicas > self.max_replicas {
            return invalid(format!(
                "this worker owns {} ranks but max_replicas is {}: it could never be in a formation",
                self.replicas, self.max_replicas
            ));
        }
        if self.heartbeat.is_zero() {
            return invalid("heartbeat is zero".to_string());
        }
        if self.suspect_after <= self.heartbeat {
            return invalid(format!(
                "suspect_after {:?} is not above heartbeat {:?}: a single late heartbeat would count as a loss",
                self.suspect_after, self.heartbeat
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: Duration = Duration::from_secs(1);

    #[test]
    fn defaults_and_ranges() {
        let cfg = MembershipConfig::new(Slot(2), 1, 4, 3, 4, HB).unwrap();
        assert_eq!((cfg.suspect_after, cfg.settle), (3 * HB, 2 * HB));
        let bad = |r: Result<MembershipConfig, ConfigError>| matches!(r, Err(ConfigError::Invalid(_)));
        assert!(bad(MembershipConfig::new(Slot(0), 1, 4, 0, 4, HB)), "min 0");
        assert!(bad(MembershipConfig::new(Slot(0), 1, 4, 5, 4, HB)), "min > max");
        assert!(bad(MembershipConfig::new(Slot(4), 1, 4, 3, 4, HB)), "slot >= slots");
        assert!(bad(MembershipConfig::new(Slot(0), 1, 0, 1, 1, HB)), "no slots");
        assert!(bad(MembershipConfig::new(Slot(0), 1, MAX_SLOTS + 1, 1, 1, HB)), "too many slots");
        assert!(bad(MembershipConfig::new(Slot(0), 0, 4, 3, 4, HB)), "no replicas");
        assert!(bad(MembershipConfig::new(Slot(0), 8, 4, 3, 4, HB)), "replicas > max");
        assert!(bad(MembershipConfig::new(Slot(0), 1, 4, 3, 4, Duration::ZERO)), "heartbeat zero");
        let mut cfg = MembershipConfig::new(Slot(0), 1, 4, 3, 4, HB).unwrap();
        cfg.suspect_after = HB;
        assert!(cfg.validate().is_err(), "suspect_after must exceed heartbeat");
    }
}
