//! Metrics in the Prometheus text format (DESIGN §5): node metrics from /proc with
//! node_exporter's names where they overlap, per-service metrics from the supervisor's
//! cgroups and PID 1's status (`tessera_service_*`), and the node agent's own rusage.
//! Served at `/metrics` by the node API and printed by `tessera metrics` on the console.

pub mod cgroup;
pub mod collect;
pub mod format;
pub mod proc;

pub use collect::Sources;
pub use format::Family;

/// The whole exposition: node, services (with PID 1's status when it answered), the agent
/// itself, and `extra` families (life-cycle and health, from the running agent).
pub fn exposition(
    src: &Sources,
    status: Option<&tessera_common::control::Status>,
    extra: Vec<Family>,
) -> String {
    let mut families = collect::node_families(src);
    families.extend(collect::service_families(src, status));
    families.extend(collect::self_families());
    families.extend(extra);
    format::render(&families)
}
