//! The shim as its own executable, for this crate's tests only; on a node the shim is
//! `tessera container shim …` of the multi-call binary.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(tessera_container::runtime::shim::main(&args));
}
