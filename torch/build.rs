//! Embeds an rpath to libtorch's lib directory, so that `pipe-torch` runs without
//! LD_LIBRARY_PATH (torch-sys, a direct dependency for this reason, exports the directory
//! it linked against).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
