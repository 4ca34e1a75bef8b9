//! The shim as its own executable, for this crate's tests only; on a node the shim is
//! `tessera container shim …` of the multi-call binary. `exec STATE_DIR [-e K=V]... -- CMD…`
//! runs `runtime::exec` in this fresh, single-threaded process, as the console CLI does.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("exec") {
        let dir = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_default());
        let rest = &args[2.min(args.len())..];
        let split = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
        let env: Vec<String> = rest[..split]
            .chunks(2)
            .filter(|p| p[0] == "-e" && p.len() == 2)
            .map(|p| p[1].clone())
            .collect();
        let cmd = &rest[(split + 1).min(rest.len())..];
        match tessera_container::runtime::exec::exec(&dir, cmd, &env) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("exec: {e}");
                std::process::exit(125);
            }
        }
    }
    std::process::exit(tessera_container::runtime::shim::main(&args));
}
