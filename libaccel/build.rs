//! Compiles accel's XDP flow filter (`bpf/accel_xdp.c`) to a BPF object in `OUT_DIR`; the crate
//! embeds it with `include_bytes!` and loads it through libbpf at run time. The object is built
//! here, not shipped, so the C source in the repository is the only truth about the program.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SRC: &str = "bpf/accel_xdp.c";
const PACKAGES: &str = "clang llvm libbpf-dev (and linux-libc-dev)";

fn main() {
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("accel_xdp.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());

    let version = Command::new(&clang).arg("--version").output();
    if !matches!(&version, Ok(o) if o.status.success()) {
        fail(&format!(
            "`{clang}` was not found or does not run; it compiles accel's XDP program ({SRC}).\n\
             Install it with: apt-get install {PACKAGES}\n\
             (or point the CLANG environment variable at a clang that has the BPF target)"
        ));
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail(&format!(
            "/usr/include/bpf/bpf_helpers.h is missing; accel's XDP program ({SRC}) needs libbpf's headers.\n\
             Install them with: apt-get install {PACKAGES}"
        ));
    }

    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
    // Debian keeps <asm/types.h> (needed by <linux/*.h>) in the multiarch include directory.
    if let Some(dir) = multiarch_include(&clang) {
        cmd.arg("-I").arg(dir);
    }
    cmd.args(["-c", SRC, "-o"]).arg(&obj);
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "clang failed ({s}) compiling {SRC}; see the errors above. If headers are missing, \
             install: apt-get install {PACKAGES}"
        )),
        Err(e) => fail(&format!(
            "could not run `{clang}`: {e}. Install: apt-get install {PACKAGES}"
        )),
    }
}

fn multiarch_include(clang: &str) -> Option<PathBuf> {
    let o = Command::new(clang).arg("-print-multiarch").output().ok()?;
    let triple = String::from_utf8(o.stdout).ok()?;
    let triple = triple.trim();
    let dir = Path::new("/usr/include").join(if triple.is_empty() {
        // Older clang prints nothing; derive Debian's multiarch name from the host arch.
        match env::consts::ARCH {
            "x86_64" => "x86_64-linux-gnu",
            "aarch64" => "aarch64-linux-gnu",
            _ => return None,
        }
    } else {
        triple
    });
    dir.is_dir().then_some(dir)
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    panic!("{msg}");
}
