// Build-script code shared by the crates that compile BPF C programs (libaccel's XDP filter,
// the tools' fault injector): `include!`d by their build.rs, never compiled into a crate.

/// Compiles `src` (relative to the crate) with clang's BPF target into `OUT_DIR/<obj_name>` and
/// returns the object's path. `extra` is added to clang's arguments. Fails the build with a
/// message naming the missing package.
fn compile_bpf(src: &str, obj_name: &str, extra: &[&str]) -> std::path::PathBuf {
    use std::env;
    use std::path::PathBuf;
    use std::process::Command;

    const PACKAGES: &str = "clang llvm libbpf-dev (and linux-libc-dev)";

    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join(obj_name);
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());

    let version = Command::new(&clang).arg("--version").output();
    if !matches!(&version, Ok(o) if o.status.success()) {
        fail(&format!(
            "`{clang}` was not found or does not run; it compiles the BPF program {src}.\n\
             Install it with: apt-get install {PACKAGES}\n\
             (or point the CLANG environment variable at a clang that has the BPF target)"
        ));
    }
    if !std::path::Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail(&format!(
            "/usr/include/bpf/bpf_helpers.h is missing; the BPF program {src} needs libbpf's headers.\n\
             Install them with: apt-get install {PACKAGES}"
        ));
    }

    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
    cmd.args(extra);
    // Debian keeps <asm/types.h> (needed by <linux/*.h>) in the multiarch include directory.
    if let Some(dir) = multiarch_include(&clang) {
        cmd.arg("-I").arg(dir);
    }
    cmd.args(["-c", src, "-o"]).arg(&obj);
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "clang failed ({s}) compiling {src}; see the errors above. If headers are missing, \
             install: apt-get install {PACKAGES}"
        )),
        Err(e) => fail(&format!(
            "could not run `{clang}`: {e}. Install: apt-get install {PACKAGES}"
        )),
    }
    obj
}

fn multiarch_include(clang: &str) -> Option<std::path::PathBuf> {
    use std::path::Path;
    let o = std::process::Command::new(clang)
        .arg("-print-multiarch")
        .output()
        .ok()?;
    let triple = String::from_utf8(o.stdout).ok()?;
    let triple = triple.trim();
    let dir = Path::new("/usr/include").join(if triple.is_empty() {
        // Older clang prints nothing; derive Debian's multiarch name from the host arch.
        match std::env::consts::ARCH {
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
