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
    /// Socket buffer sizes (`ACCEL_TCP_RMEM`, ...); `None` keeps the stack's default.
    pub buffers: Buffers,
}

/// Bytes of buffer per socket and direction, as the environment sets them. A TCP socket's
/// receive buffer is also the largest window it advertises; its send buffer bounds the data in
/// flight. The stack allocates them when a connection is made: they are what an idle
/// connection costs (see README, "Memory per connection").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buffers {
    pub tcp_rx: Option<usize>,
    pub tcp_tx: Option<usize>,
    pub udp_rx: Option<usize>,
    pub udp_tx: Option<usize>,
    /// `ACCEL_MEM_MAX`: most bytes of socket buffers per interface.
    pub mem_max: MemMax,
}

/// How much socket buffer memory a stack may hold (see the stack's `Config::mem_max`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemMax {
    /// Half the memory the process may have: the machine's, or its memory cgroup's limit when
    /// lower (a container's). The stack counts buffers whole (it cannot know how much of them
    /// data will touch), so this keeps its buffers, all full at once, from taking the process
    /// past its memory.
    #[default]
    HalfOfMemory,
    Bytes(usize),
    /// `none`: no limit.
    Unlimited,
}

/// Smallest buffer accepted (the kernel's `tcp_rmem` minimum, one page).
pub const MIN_BUFFER: usize = 4096;
/// Largest buffer accepted: a TCP window scale of 14 (RFC 7323) reaches 1 GiB.
pub const MAX_BUFFER: usize = 1 << 30;

/// A buffer size in bytes, with an optional K, M or G suffix (powers of 1024): `131072`,
/// `128K`, `4M`.
fn parse_size(key: &str, v: &str) -> Result<usize, String> {
    match parse_bytes(key, v)? {
        b if (MIN_BUFFER..=MAX_BUFFER).contains(&b) => Ok(b),
        _ => Err(format!(
            "{key}={v} is out of range: a buffer size is {MIN_BUFFER} bytes to 1G"
        )),
    }
}

/// A number of bytes, with an optional K, M, G or T suffix (powers of 1024).
fn parse_bytes(key: &str, v: &str) -> Result<usize, String> {
    let t = v.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad_size(key, v)),
    };
    let n: usize = digits.parse().map_err(|_| bad_size(key, v))?;
    n.checked_shl(shift)
        .filter(|b| b >> shift == n)
        .ok_or_else(|| format!("{key}={v} is out of range"))
}

fn bad_size(key: &str, v: &str) -> String {
    format!("{key}={v} is not a size: give bytes, or a number with K, M or G (e.g. 128K)")
}

impl Config {
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
        let size = |key: &str| -> Result<Option<usize>, String> {
            match get(key).as_deref() {
                None | Some("") => Ok(None),
                Some(v) => parse_size(key, v).map(Some),
            }
        };
        let buffers = Buffers {
            tcp_rx: size("ACCEL_TCP_RMEM")?,
            tcp_tx: size("ACCEL_TCP_WMEM")?,
            udp_rx: size("ACCEL_UDP_RMEM")?,
            udp_tx: size("ACCEL_UDP_WMEM")?,
            mem_max: match get("ACCEL_MEM_MAX").as_deref() {
                None | Some("") => MemMax::HalfOfMemory,
                Some("none") => MemMax::Unlimited,
                Some(v) => MemMax::Bytes(
                    parse_bytes("ACCEL_MEM_MAX", v)
                        .map_err(|e| format!("{e} (or `none` for no limit)"))?,
                ),
            },
        };
        Ok(Config {
            interfaces,
            profile,
            spin,
            log,
            stats_at_exit,
            buffers,
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

    #[test]
    fn buffer_sizes_take_bytes_or_a_suffix() {
        assert_eq!(cfg(&[]).unwrap().buffers, Buffers::default());
        let c = cfg(&[
            ("ACCEL_TCP_RMEM", "131072"),
            ("ACCEL_TCP_WMEM", "64K"),
            ("ACCEL_UDP_RMEM", "1m"),
            ("ACCEL_UDP_WMEM", "1G"),
        ])
        .unwrap();
        assert_eq!(
            c.buffers,
            Buffers {
                tcp_rx: Some(131072),
                tcp_tx: Some(65536),
                udp_rx: Some(1 << 20),
                udp_tx: Some(1 << 30),
                mem_max: MemMax::HalfOfMemory,
            }
        );
    }

    #[test]
    fn socket_memory_limit_is_half_the_memory_unless_told() {
        let m = |v: &str| cfg(&[("ACCEL_MEM_MAX", v)]).map(|c| c.buffers.mem_max);
        assert_eq!(cfg(&[]).unwrap().buffers.mem_max, MemMax::HalfOfMemory);
        assert_eq!(m("2G"), Ok(MemMax::Bytes(2 << 30)));
        assert_eq!(m("1000000"), Ok(MemMax::Bytes(1_000_000)));
        assert_eq!(m("none"), Ok(MemMax::Unlimited));
        assert!(m("lots").unwrap_err().contains("`none`"));
    }

    #[test]
    fn buffer_sizes_out_of_range_or_garbage_are_refused() {
        for (v, says) in [
            ("4095", "out of range"),
            ("2G", "out of range"),
            ("99999999999999999999K", "not a size"),
            ("18446744073709551615K", "out of range"),
            ("16777216T", "out of range"),
            ("12Q", "not a size"),
            ("K", "not a size"),
            ("-1", "not a size"),
        ] {
            let e = cfg(&[("ACCEL_TCP_RMEM", v)]).unwrap_err();
            assert!(e.contains("ACCEL_TCP_RMEM") && e.contains(says), "{v}: {e}");
        }
    }
}
