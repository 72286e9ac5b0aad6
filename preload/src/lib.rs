//! The preload library. Empty until the preload issue: `accel-run` will put it in `LD_PRELOAD`.
