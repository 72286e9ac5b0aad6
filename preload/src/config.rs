//! The `ACCEL_*` environment, read once when the runtime starts (accel-run sets it).

use std::time::Duration;

/// How a call that must wait spends its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Spin (busy-poll) for the whole wait: lowest latency, one core per waiting thread.
    Latency,
    /// Spin for `spin` then sleep until the queue or a timer wakes us.
    Balanced,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Interfaces to accelerate; empty = every up, non-loopback Ethernet interface with IPv4.
    pub interfaces: Vec<String>,
    pub profile: Profile,
    /// How long a waiting call spins before it sleeps; `None` = spin for ever (latency).
    pub spin: Option<Duration>,
    /// `ACCEL_LOG`: a tracing filter (off when unset).
    pub log: Option<String>,
    /// `ACCEL_STATS=1`: print counters to stderr at exit.
    pub stats_at_exit: bool,
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let interfaces = get("ACCEL_INTERFACES")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let profile = match get("ACCEL_PROFILE").as_deref() {
            None | Some("") | Some("balanced") => Profile::Balanced,
            Some("latency") => Profile::Latency,
            Some(other) => {
                return Err(format!(
                    "ACCEL_PROFILE={other} is not a profile: use latency or balanced"
                ))
            }
        };
        let spin = match get("ACCEL_SPIN_US").as_deref() {
            None | Some("") => match profile {
                Profile::Latency => None,
                Profile::Balanced => Some(Duration::from_micros(50)),
            },
            Some("-1") => None,
            Some(v) => match v.parse::<u64>() {
                Ok(us) => Some(Duration::from_micros(us)),
                Err(_) => {
                    return Err(format!(
                        "ACCEL_SPIN_US={v} is not a number of microseconds (or -1 to spin for ever)"
                    ))
                }
            },
        };
        let log = get("ACCEL_LOG").filter(|s| !s.is_empty());
        let stats_at_exit = matches!(
            get("ACCEL_STATS").as_deref(),
            Some("1") | Some("yes") | Some("true")
        );
        Ok(Config {
            interfaces,
            profile,
            spin,
            log,
            stats_at_exit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_are_balanced_with_a_short_spin() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.profile, Profile::Balanced);
        assert_eq!(c.spin, Some(Duration::from_micros(50)));
        assert!(c.interfaces.is_empty());
        assert!(!c.stats_at_exit);
    }

    #[test]
    fn latency_spins_for_ever_unless_told() {
        assert_eq!(cfg(&[("ACCEL_PROFILE", "latency")]).unwrap().spin, None);
        let c = cfg(&[("ACCEL_PROFILE", "latency"), ("ACCEL_SPIN_US", "200")]).unwrap();
        assert_eq!(c.spin, Some(Duration::from_micros(200)));
    }

    #[test]
    fn interfaces_and_bad_values() {
        let c = cfg(&[("ACCEL_INTERFACES", "eth0, eth1,")]).unwrap();
        assert_eq!(c.interfaces, vec!["eth0", "eth1"]);
        assert!(cfg(&[("ACCEL_PROFILE", "fast")])
            .unwrap_err()
            .contains("latency or balanced"));
        assert!(cfg(&[("ACCEL_SPIN_US", "lots")])
            .unwrap_err()
            .contains("microseconds"));
    }
}
