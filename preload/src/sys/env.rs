//! accel's environment variables (`ACCEL_*`, `LD_PRELOAD`) as they were when the library was
//! loaded.
//!
//! A program may clear its environment before a forked child first uses a socket: nginx's
//! master starts its workers with nothing but `TZ`, yet they inherit its listeners and are
//! still the program accel-run started. Reading the variables when the library loads (an
//! `.init_array` constructor, which runs in every process image, after exec too) and keeping
//! them in memory, which fork copies, gives every process of the program the settings
//! accel-run gave it.

use std::sync::OnceLock;

static AT_LOAD: OnceLock<Vec<(String, String)>> = OnceLock::new();

fn ours(key: &str) -> bool {
    key.starts_with("ACCEL_") || key == "LD_PRELOAD"
}

extern "C" fn capture() {
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| ours(k))
        .collect();
    let _ = AT_LOAD.set(vars);
}

/// Runs `capture` when the library is loaded (the dynamic loader calls every `.init_array`
/// entry, after libc is initialised). Placing a function pointer there is all it takes.
#[used]
#[link_section = ".init_array"]
static CAPTURE: extern "C" fn() = capture;

/// Variable `key` (one of accel's) as it was when the library loaded; the live environment's
/// value if the constructor did not run (a binary that links the crate statically).
pub fn var(key: &str) -> Option<String> {
    debug_assert!(ours(key), "{key} is not one of accel's variables");
    match AT_LOAD.get() {
        Some(vars) => vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()),
        None => std::env::var(key).ok(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_constructor_ran_and_kept_only_accels_variables() {
        let vars = super::AT_LOAD.get().expect("captured at load");
        assert!(vars.iter().all(|(k, _)| super::ours(k)), "{vars:?}");
    }
}
