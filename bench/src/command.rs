//! `tessera bench …`: the benchmarks of the host build. Their host sides live here (boot,
//! node, container) and in the crates they measure (CA, identity, hub); init only dispatches.

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Boot time and size of the image against the busybox floor.
    Boot(crate::boot::BootBenchArgs),
    /// CA issuance throughput and latency against cfssl.
    Ca(tessera_ca::CaBenchArgs),
    /// Boot time added by the node identity (PID 1 → certificate), per key mode.
    Identity(tessera_certmgr::bench::IdentityBenchArgs),
    /// Component hub: call round trips (local, remote) against NATS, failure detection, convergence.
    Hub(tessera_hub::bench::HubBenchArgs),
    /// Node agent: snapshot latency (ours vs the btrfs and LVM CLIs), service start-up, RSS.
    Node(crate::node::NodeBenchArgs),
    /// Container agent: create+start+wait+delete ours vs crun, template clone, agent and shim RSS.
    Container(crate::container::ContainerBenchArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Boot(args) => crate::boot::run(args),
        BenchCommand::Ca(args) => tessera_ca::bench(args),
        BenchCommand::Identity(args) => tessera_certmgr::bench::bench(args),
        BenchCommand::Hub(args) => tessera_hub::bench::run(args),
        BenchCommand::Node(args) => crate::node::run(args),
        BenchCommand::Container(args) => crate::container::run(args),
    }
}
