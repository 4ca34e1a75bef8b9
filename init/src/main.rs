//! `tessera`: one static binary for every role. Run as /init (or as PID 1) it is the init;
//! as /sbin/request-key it is the keyring callout; otherwise a subcommand picks the role.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tessera_common::control::{ServiceAction, ShutdownMode};
use tessera_common::paths;
use tessera_init::{cli, klog, pid1};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera node OS: PID 1, node CLI, image builder and VM runner"
)]
struct Cli {
    /// Control socket of the PID 1 to talk to.
    #[arg(long, global = true, env = paths::CONTROL_SOCKET_ENV, default_value_os_t = paths::default_control_socket())]
    control: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the supervisor: PID 1 on a node, or a child subreaper on a host (--subreaper).
    Init {
        /// Run as a subreaper under an ordinary host (no early boot, no reboot(2)).
        #[arg(long)]
        subreaper: bool,
        #[arg(long, default_value = paths::SERVICES_DIR)]
        services: PathBuf,
        #[arg(long, default_value = paths::RUNTIME_DIR)]
        runtime: PathBuf,
    },
    /// Show the node and its services.
    Status {
        /// Print the raw JSON status.
        #[arg(long)]
        json: bool,
    },
    /// Show kept log events (all services, or one); -f follows new ones.
    Logs {
        #[arg(short, long)]
        follow: bool,
        /// Only the last N events.
        #[arg(short = 'n', long)]
        lines: Option<usize>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
        service: Option<String>,
    },
    /// Start, stop or restart a service.
    Service {
        #[arg(value_enum)]
        action: Action,
        name: String,
        /// Return at once instead of waiting for the service to get there.
        #[arg(long)]
        no_wait: bool,
    },
    /// Send sd_notify assignments to $NOTIFY_SOCKET (for shell services), e.g. READY=1.
    Notify {
        /// Shorthand for READY=1.
        #[arg(long)]
        ready: bool,
        /// Shorthand for STATUS=TEXT.
        #[arg(long)]
        status: Option<String>,
        assignments: Vec<String>,
    },
    /// Load a kernel module (name or alias) with its dependencies.
    Modprobe {
        #[arg(short, long)]
        quiet: bool,
        name: String,
        /// Module parameters, key=value.
        params: Vec<String>,
    },
    /// Stop all services in order and power off.
    Poweroff,
    /// Stop all services in order and reboot.
    Reboot,
    /// Stop all services in order and halt.
    Halt,
    /// Build the node image, or re-pin its Debian packages.
    #[command(subcommand)]
    #[cfg(feature = "host")]
    Image(tessera_image::ImageCommand),
    /// Boot the image in QEMU (kernel, PXE or UEFI disk).
    #[command(subcommand)]
    #[cfg(feature = "host")]
    Vm(tessera_qemu::VmCommand),
    /// Benchmarks.
    #[command(subcommand)]
    #[cfg(feature = "host")]
    Bench(tessera_bench::command::BenchCommand),
    /// The cluster CA: one-time tokens, certificates, revocation (runs on the operator's host).
    #[cfg(feature = "host")]
    #[command(subcommand)]
    Ca(tessera_ca::CaCommand),
    /// Node identity: check the key handling on this kernel.
    #[command(subcommand)]
    Identity(tessera_certmgr::cli::IdentityCommand),
    /// The node API from the host, over mTLS with an operator certificate.
    Node(tessera_node::cli::NodeArgs),
    /// This node's metrics in the Prometheus text format (what /metrics serves).
    Metrics,
    /// The component hub: groups, members, calls, attributes and monitors, through a hub's mTLS API.
    Hub(tessera_hub::cli::HubArgs),
    /// The node's firewall: exposures and the nftables table `inet tessera`.
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// Volumes and snapshots on the data disk (Btrfs subvolumes or LVM thin volumes).
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Containers: import bundles and images, create, start, stop, remove, logs.
    #[command(subcommand)]
    Container(tessera_container::cli::ContainerCommand),
    /// Run one of the node's agents (they are started by PID 1 from their service files).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Service: forward the kernel log (/dev/kmsg) as structured events.
    #[command(hide = true)]
    Klog,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Acquire and validate the node's configuration (kernel args, NoCloud, IMDSv2).
    Userdata,
    /// Network: links, DHCPv4 or static addresses, default route, resolv.conf, IPv6 RAs.
    Net,
    /// Certificate manager: node identity (CA bootstrap, renewal, standalone), child tokens.
    Certmgr,
    /// Node agent: node API (mTLS), metrics, health checks, life-cycle.
    Node,
    /// Component hub: groups, call/cast, attributes, monitors; clustered over chitchat.
    Hub(Box<tessera_hub::service::AgentArgs>),
    /// Firewall: the nftables table `inet tessera` and its exposures API.
    Firewall,
    /// SSH developer console: dropbear with root's keys from user-data (off without keys).
    Ssh,
    /// Storage: the data disk, its volumes and snapshots (Btrfs or LVM thin).
    Storage,
    /// Containers: templates, COW instances, the runtime's shims, restarts by policy.
    Container,
}

#[derive(Subcommand)]
enum VolumeCommand {
    /// A new empty volume.
    Create {
        name: String,
        /// Virtual size of an lvm-thin volume (e.g. 1G, 512M; default 1G). Btrfs ignores it.
        #[arg(long)]
        size: Option<String>,
        #[arg(long, default_value = tessera_node::storage::service::SOCKET)]
        socket: PathBuf,
    },
    /// A copy-on-write snapshot NAME of volume or snapshot SOURCE.
    Snapshot {
        source: String,
        name: String,
        #[arg(long)]
        readonly: bool,
        #[arg(long, default_value = tessera_node::storage::service::SOCKET)]
        socket: PathBuf,
    },
    /// Volumes and snapshots, with the free space.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = tessera_node::storage::service::SOCKET)]
        socket: PathBuf,
    },
    /// Delete a volume or snapshot (and its data).
    Delete {
        name: String,
        #[arg(long, default_value = tessera_node::storage::service::SOCKET)]
        socket: PathBuf,
    },
    /// Snapshot create+delete latency: ours against the Debian tools (`make bench-node`).
    Bench {
        #[arg(long, default_value_t = 100)]
        runs: usize,
        #[arg(long, default_value = tessera_node::storage::service::SOCKET)]
        socket: PathBuf,
    },
}

#[derive(Subcommand)]
enum FirewallCommand {
    /// Exposures, cluster networks, and the table the kernel holds.
    Show {
        /// The raw JSON reply.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = tessera_node::firewall::service::SOCKET)]
        socket: PathBuf,
    },
    /// Open PORT[/tcp|udp] to a scope (replaces an exposure of the same port).
    Expose {
        /// PORT or PORT/PROTO, e.g. 8080 or 53/udp.
        port: String,
        /// node-local (loopback), cluster (firewall.cluster_cidrs) or public.
        #[arg(long)]
        scope: String,
        /// Who the exposure is for (shown by `show`).
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value = tessera_node::firewall::service::SOCKET)]
        socket: PathBuf,
    },
    /// Close PORT[/tcp|udp] again.
    Unexpose {
        port: String,
        #[arg(long, default_value = tessera_node::firewall::service::SOCKET)]
        socket: PathBuf,
    },
    /// The nft JSON transaction in force (what `nft -j -f -` was given).
    Ruleset {
        #[arg(long, default_value = tessera_node::firewall::service::SOCKET)]
        socket: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Action {
    Start,
    Stop,
    Restart,
}

/// The host build (CA server, benchmarks) allocates from many threads at once.
#[cfg(feature = "host")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether the first argument is one of the CLI's commands: then `tessera` is PID 1 of a
/// container running, say, `tessera hub component serve`, not the node's init (which the
/// kernel starts with no argument, or with kernel-command-line words that are no command).
fn names_a_command(first: Option<String>) -> bool {
    use clap::CommandFactory;
    first.is_some_and(|f| Cli::command().get_subcommands().any(|c| c.get_name() == f))
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if argv0 == "init" || (std::process::id() == 1 && !names_a_command(std::env::args().nth(1))) {
        pid1::main();
    }
    if argv0 == "request-key" {
        let args: Vec<String> = std::env::args().skip(1).collect();
        return tessera_certmgr::callout::main(&args);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // One shim per container start: skip building the CLI.
    if let [a, b, rest @ ..] = args.as_slice() {
        if a == "container" && b == "shim" {
            return ExitCode::from(
                u8::try_from(tessera_container::runtime::shim::main(rest)).unwrap_or(1),
            );
        }
    }
    if let Some((name, service)) = boot_path_service(&args) {
        return match service() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tessera {name}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // As /sbin/modprobe (the kernel's request_module helper): `modprobe -q -- NAME`. The
    // kernel waits for it, so its usual form skips building the CLI.
    if argv0 == "modprobe" {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if let [q, dashes, name] = args.as_slice() {
            if q == "-q" && dashes == "--" {
                return match cli::modprobe(true, name, &[]) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(_) => ExitCode::FAILURE,
                };
            }
        }
    }
    let cli = if argv0 == "modprobe" {
        Cli::parse_from(
            std::iter::once("tessera".into())
                .chain(std::iter::once("modprobe".into()))
                .chain(std::env::args_os().skip(1)),
        )
    } else {
        Cli::parse()
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tessera: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Services on the boot path run without building the whole CLI (~40 ms per exec under TCG).
type Service = fn() -> anyhow::Result<()>;

/// `tessera agent hub`: the identity PID 1 handed over (fd 3), or PEM files in development.
fn hub_agent(args: tessera_hub::service::AgentArgs) -> anyhow::Result<()> {
    if args.cert.is_some() {
        return tessera_hub::service::run_agent(args);
    }
    use tessera_certmgr::agent_identity::{self, AgentIdentity};
    use tessera_hub::peer::Tls;
    let id = AgentIdentity::from_handoff()?;
    let tls = Tls {
        identity: id.certified.clone(),
        trust: id.trust.clone(),
    };
    // The certificate lives a few hours: its successors replace it for new connections.
    tessera_hub::service::run_with_identity(args, tls, move |configs| {
        let apply = move |new: &AgentIdentity| {
            let tls = Tls {
                identity: new.certified.clone(),
                trust: new.trust.clone(),
            };
            configs.replace(&tls).map_err(|e| e.to_string())
        };
        agent_identity::keep_renewed(
            id,
            tessera_certmgr::client::default_socket(),
            apply,
            tessera_hub::service::report_renewal,
        )?;
        Ok(())
    })
}

fn boot_path_service(args: &[String]) -> Option<(&'static str, Service)> {
    match args {
        [a] if a == "klog" => Some(("klog", klog::run)),
        [a, b] if a == "agent" && b == "userdata" => {
            Some(("agent userdata", tessera_userdata::run_service))
        }
        [a, b] if a == "agent" && b == "net" => Some(("agent net", tessera_node::net::run)),
        [a, b] if a == "agent" && b == "certmgr" => {
            Some(("agent certmgr", tessera_certmgr::run_service))
        }
        [a, b] if a == "agent" && b == "firewall" => {
            Some(("agent firewall", tessera_node::firewall::run))
        }
        [a, b] if a == "agent" && b == "ssh" => Some(("agent ssh", tessera_node::ssh::run)),
        [a, b] if a == "agent" && b == "storage" => {
            Some(("agent storage", tessera_node::storage::run))
        }
        [a, b] if a == "agent" && b == "container" => {
            Some(("agent container", tessera_container::service::run))
        }
        _ => None,
    }
}

fn firewall_cli(cmd: FirewallCommand) -> anyhow::Result<()> {
    use tessera_node::firewall::client;
    match cmd {
        FirewallCommand::Show { json, socket } => client::show(&socket, json),
        FirewallCommand::Expose {
            port,
            scope,
            owner,
            socket,
        } => client::expose(&socket, &port, &scope, owner.as_deref()),
        FirewallCommand::Unexpose { port, socket } => client::unexpose(&socket, &port),
        FirewallCommand::Ruleset { socket } => client::ruleset(&socket),
    }
}

fn volume_cli(cmd: VolumeCommand) -> anyhow::Result<()> {
    use tessera_node::storage::{bench, client};
    match cmd {
        VolumeCommand::Create { name, size, socket } => {
            client::create(&socket, &name, size.as_deref())
        }
        VolumeCommand::Snapshot {
            source,
            name,
            readonly,
            socket,
        } => client::snapshot(&socket, &source, &name, readonly),
        VolumeCommand::List { json, socket } => client::list(&socket, json),
        VolumeCommand::Delete { name, socket } => client::delete(&socket, &name),
        VolumeCommand::Bench { runs, socket } => bench::run_bench(&socket, runs),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let socket = cli.control;
    match cli.command {
        Command::Init {
            subreaper: true,
            services,
            runtime,
        } => pid1::subreaper_main(services, runtime)?,
        Command::Init {
            subreaper: false, ..
        } => {
            anyhow::bail!(
                "not PID 1: on a host run `tessera init --subreaper --services DIR --runtime DIR`"
            )
        }
        Command::Status { json } => cli::status(&socket, json)?,
        Command::Logs {
            follow,
            lines,
            json,
            service,
        } => cli::logs(&socket, follow, lines, json, service)?,
        Command::Service {
            action,
            name,
            no_wait,
        } => {
            let action = match action {
                Action::Start => ServiceAction::Start,
                Action::Stop => ServiceAction::Stop,
                Action::Restart => ServiceAction::Restart,
            };
            cli::service(&socket, action, &name, no_wait)?
        }
        Command::Notify {
            ready,
            status,
            assignments,
        } => cli::notify(assignments, ready, status)?,
        Command::Modprobe {
            quiet,
            name,
            params,
        } => cli::modprobe(quiet, &name, &params)?,
        Command::Poweroff => cli::shutdown(&socket, ShutdownMode::Poweroff)?,
        Command::Reboot => cli::shutdown(&socket, ShutdownMode::Reboot)?,
        Command::Halt => cli::shutdown(&socket, ShutdownMode::Halt)?,
        Command::Klog => klog::run()?,
        Command::Identity(cmd) => return tessera_certmgr::cli::run(cmd),
        Command::Node(args) => return tessera_node::cli::run_node(args),
        Command::Metrics => tessera_node::cli::run_metrics()?,
        Command::Hub(args) => tessera_hub::cli::run(args)?,
        Command::Agent(AgentCommand::Hub(args)) => hub_agent(*args)?,
        Command::Agent(AgentCommand::Node) => tessera_node::api::service::run()?,
        #[cfg(feature = "host")]
        Command::Ca(cmd) => tessera_ca::run(cmd)?,
        Command::Agent(AgentCommand::Userdata) => tessera_userdata::run_service()?,
        Command::Agent(AgentCommand::Net) => tessera_node::net::run()?,
        Command::Agent(AgentCommand::Certmgr) => tessera_certmgr::run_service()?,
        Command::Agent(AgentCommand::Firewall) => tessera_node::firewall::run()?,
        Command::Agent(AgentCommand::Ssh) => tessera_node::ssh::run()?,
        Command::Firewall(cmd) => firewall_cli(cmd)?,
        Command::Agent(AgentCommand::Storage) => tessera_node::storage::run()?,
        Command::Volume(cmd) => volume_cli(cmd)?,
        Command::Agent(AgentCommand::Container) => tessera_container::service::run()?,
        Command::Container(cmd) => tessera_container::cli::run(cmd)?,
        #[cfg(feature = "host")]
        Command::Image(cmd) => tessera_image::run(cmd)?,
        #[cfg(feature = "host")]
        Command::Vm(cmd) => return tessera_qemu::run(cmd),
        #[cfg(feature = "host")]
        Command::Bench(cmd) => tessera_bench::command::run(cmd)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod pid1_tests {
    use super::names_a_command;

    #[test]
    fn only_a_cli_command_keeps_pid_1_out_of_init_mode() {
        assert!(names_a_command(Some("hub".into())));
        assert!(names_a_command(Some("container".into())));
        assert!(
            !names_a_command(None),
            "the kernel starts init with no argument"
        );
        assert!(
            !names_a_command(Some("splash".into())),
            "a stray kernel word is no command"
        );
    }
}
