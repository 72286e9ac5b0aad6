//! The snapshot an accelerated process publishes for `accel-stat`: what it accelerates (stacks
//! per interface, their sockets) and its counters.
//!
//! This module is the schema. It depends on serde and serde_json only, so the preload library (which must not
//! depend on accel-tools) can copy it verbatim; keep the two in step and bump [`VERSION`] on any
//! change a reader cannot ignore (adding a field is compatible: readers ignore unknown fields,
//! and absent optional fields take their defaults).
//!
//! # The contract
//!
//! - Each accelerated process writes `$ACCEL_STAT_DIR/<pid>.json` (default directory
//!   [`DEFAULT_DIR`], created by the writer if missing), about every 100 ms.
//! - It replaces the file atomically: write `.<pid>.json.tmp` in the same directory, then
//!   `rename(2)` it over `<pid>.json`; readers therefore never see a half-written file, and
//!   ignore every name that is not `<digits>.json`.
//! - It removes the file when it exits. A process that dies without doing so leaves a stale file;
//!   readers skip files whose pid is not running (and remove them when they may).
//!
//! # Format (version 1)
//!
//! ```json
//! {"version":1,"pid":123,"program":"nginx","updated_unix_ms":1700000000000,
//!  "stacks":[{"interface":"veth-a","queues":[0],"xdp_mode":"native","copy_mode":"copy",
//!    "counters":{"rx_frames":1,"tx_frames":1},
//!    "sockets":[{"fd":5,"proto":"tcp","state":"LISTEN","local":"198.18.0.1:80",
//!                "remote":null,"recv_queue":0,"send_queue":0}]}]}
//! ```
//!
//! - `program`: the program's name (`/proc/self/comm` or argv\[0\]'s file name).
//! - `updated_unix_ms`: when the snapshot was taken, milliseconds since the Unix epoch.
//! - one entry in `stacks` per interface the process accelerates on; `queues` are the RX queue
//!   ids it serves there; `xdp_mode` is `native` or `generic`; `copy_mode` is `copy` or
//!   `zero-copy`.
//! - `counters`: name -> value, monotonic since the process started; the names are the stack's
//!   and the queues' (free-form: readers print whatever is there, sorted by name).
//! - `sockets`: `proto` is `tcp` or `udp`; `state` is the TCP state in the kernel's spelling
//!   (`LISTEN`, `ESTABLISHED`, `SYN_SENT`, `CLOSE_WAIT`, ...) or `UNCONN`/`CONNECTED` for UDP;
//!   `local`/`remote` are `address:port` (`remote` is null when not connected); `recv_queue`
//!   and `send_queue` are bytes waiting to be read by the program / to be acknowledged or sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The format version this module reads and writes.
pub const VERSION: u32 = 1;

/// Where snapshots are, unless [`DIR_ENV`] says otherwise.
pub const DEFAULT_DIR: &str = "/run/accel";

/// The environment variable that overrides [`DEFAULT_DIR`] (for writers and readers alike).
pub const DIR_ENV: &str = "ACCEL_STAT_DIR";

/// One process's snapshot: the whole content of `<pid>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub pid: u32,
    pub program: String,
    pub updated_unix_ms: u64,
    #[serde(default)]
    pub stacks: Vec<Stack>,
}

/// accel on one interface within a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    pub interface: String,
    #[serde(default)]
    pub queues: Vec<u32>,
    pub xdp_mode: String,
    pub copy_mode: String,
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    #[serde(default)]
    pub sockets: Vec<Socket>,
}

/// One accelerated socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Socket {
    /// The program's file descriptor number.
    pub fd: i32,
    pub proto: String,
    pub state: String,
    pub local: String,
    #[serde(default)]
    pub remote: Option<String>,
    #[serde(default)]
    pub recv_queue: u64,
    #[serde(default)]
    pub send_queue: u64,
}

impl Snapshot {
    /// Parses one snapshot file's text.
    pub fn from_json(text: &str) -> Result<Snapshot, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The file's text (compact, one line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a snapshot always serializes")
    }
}

/// Parses `accel-stat --json` output: an array of snapshots.
pub fn parse_list(text: &str) -> Result<Vec<Snapshot>, serde_json::Error> {
    serde_json::from_str(text)
}

/// The snapshot directory: `$ACCEL_STAT_DIR`, else [`DEFAULT_DIR`].
pub fn dir() -> PathBuf {
    dir_from(std::env::var_os(DIR_ENV))
}

/// The snapshot directory for this value of `$ACCEL_STAT_DIR`.
pub fn dir_from(value: Option<impl Into<std::ffi::OsString>>) -> PathBuf {
    value
        .map(Into::into)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// Makes the snapshot directory if it is missing, writable by every user with the sticky bit
/// (as /tmp): the processes of one program may run as different users (nginx's workers as
/// `nobody`), each writes its own file and none can remove another's. An existing directory
/// is left as it is.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o1777).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    // The umask took bits off.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))
}

/// The file process `pid` writes in `dir`.
pub fn path_for(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.json"))
}

/// The temporary file process `pid` writes before renaming it to [`path_for`].
pub fn temp_path_for(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!(".{pid}.json.tmp"))
}

/// The pid a snapshot file name stands for (`<digits>.json`), `None` for any other name.
pub fn pid_of_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".json")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"version":1,"pid":123,"program":"nginx","updated_unix_ms":1700000000000,
 "stacks":[{"interface":"veth-a","queues":[0],"xdp_mode":"native","copy_mode":"copy",
   "counters":{"rx_frames":1,"tx_frames":1},
   "sockets":[{"fd":5,"proto":"tcp","state":"LISTEN","local":"198.18.0.1:80","remote":null,"recv_queue":0,"send_queue":0}]}]}"#;

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let s: Snapshot = serde_json::from_str(EXAMPLE).unwrap();
        assert_eq!(s.version, VERSION);
        assert_eq!(s.pid, 123);
        assert_eq!(s.stacks[0].interface, "veth-a");
        assert_eq!(s.stacks[0].counters["rx_frames"], 1);
        assert_eq!(s.stacks[0].sockets[0].remote, None);
        let again: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn unknown_fields_are_ignored_and_optional_ones_default() {
        let s: Snapshot = serde_json::from_str(
            r#"{"version":1,"pid":1,"program":"x","updated_unix_ms":0,"future":true}"#,
        )
        .unwrap();
        assert!(s.stacks.is_empty());
    }

    #[test]
    fn only_pid_json_names_are_snapshots() {
        assert_eq!(pid_of_file_name("123.json"), Some(123));
        assert_eq!(pid_of_file_name(".123.json.tmp"), None);
        assert_eq!(pid_of_file_name("x.json"), None);
        assert_eq!(pid_of_file_name(".json"), None);
        assert_eq!(pid_of_file_name("+1.json"), None);
        assert_eq!(pid_of_file_name("123.json~"), None);
    }
}
