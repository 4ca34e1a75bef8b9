//! The dependency graph between services: `requires` (start only when that one is ready;
//! give up if it fails) and `after` (ordering only). Checks that every required service
//! exists and that there are no cycles; answers start order, stop order and dependents.

use super::manifest::ServiceSpec;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub struct Graph {
    /// requires[i]: indices i requires.
    pub requires: Vec<Vec<usize>>,
    /// after[i]: indices i is ordered after (requires included).
    pub after: Vec<Vec<usize>>,
}

/// Why a service was left out of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphProblem {
    pub service: String,
    pub message: String,
}

/// Keeps the services whose dependencies can be satisfied and builds their graph. Services
/// that require a missing service, or that sit on a cycle, are dropped with a problem each
/// (and so, in turn, are the services that require them).
pub fn build(mut specs: Vec<ServiceSpec>) -> (Vec<ServiceSpec>, Graph, Vec<GraphProblem>) {
    let mut problems = Vec::new();
    loop {
        let names: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let missing: Vec<(usize, String)> = specs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.requires
                    .iter()
                    .find(|r| !names.contains(r.as_str()))
                    .map(|r| (i, r.clone()))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        for (i, dep) in missing.into_iter().rev() {
            let s = specs.remove(i);
            problems.push(GraphProblem {
                message: format!("service {:?} ({}) requires {dep:?}, which does not exist or was skipped; it is not started", s.name, s.file.display()),
                service: s.name,
            });
        }
    }
    let graph = edges(&specs);
    let cyclic = on_cycles(&graph);
    if cyclic.is_empty() {
        return (specs, graph, problems);
    }
    let cycle_names: Vec<String> = cyclic.iter().map(|&i| specs[i].name.clone()).collect();
    for &i in cyclic.iter().rev() {
        let s = specs.remove(i);
        problems.push(GraphProblem {
            message: format!("service {:?} is on a dependency cycle among {}; it is not started — break the cycle in `requires`/`after`", s.name, cycle_names.join(", ")),
            service: s.name,
        });
    }
    // Dropping the cycle may leave services requiring it: run the checks again.
    let (specs, graph, more) = build(specs);
    problems.extend(more);
    (specs, graph, problems)
}

fn edges(specs: &[ServiceSpec]) -> Graph {
    let index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let lookup = |names: &[String]| -> Vec<usize> {
        let set: BTreeSet<usize> = names
            .iter()
            .filter_map(|n| index.get(n.as_str()).copied())
            .collect();
        set.into_iter().collect()
    };
    let requires: Vec<Vec<usize>> = specs.iter().map(|s| lookup(&s.requires)).collect();
    let after = specs
        .iter()
        .zip(&requires)
        .map(|(s, req)| {
            let mut all: BTreeSet<usize> = lookup(&s.after).into_iter().collect();
            all.extend(req);
            all.into_iter().collect()
        })
        .collect();
    Graph { requires, after }
}

/// Indices that cannot be ordered (Kahn's algorithm leftovers), ascending.
fn on_cycles(g: &Graph) -> Vec<usize> {
    let n = g.after.len();
    let mut pending: Vec<usize> = g.after.iter().map(Vec::len).collect();
    let mut done = vec![false; n];
    let mut progress = true;
    while progress {
        progress = false;
        for i in 0..n {
            if !done[i] && pending[i] == 0 {
                done[i] = true;
                progress = true;
                for (j, deps) in g.after.iter().enumerate() {
                    if deps.contains(&i) {
                        pending[j] -= 1;
                    }
                }
            }
        }
    }
    (0..n).filter(|&i| !done[i]).collect()
}

impl Graph {
    pub fn len(&self) -> usize {
        self.after.len()
    }

    pub fn is_empty(&self) -> bool {
        self.after.is_empty()
    }

    /// Services that (transitively) require `i`, in start order.
    pub fn dependents(&self, i: usize) -> Vec<usize> {
        let mut found = BTreeSet::new();
        let mut stack = vec![i];
        while let Some(cur) = stack.pop() {
            for (j, reqs) in self.requires.iter().enumerate() {
                if reqs.contains(&cur) && found.insert(j) {
                    stack.push(j);
                }
            }
        }
        self.start_order()
            .into_iter()
            .filter(|j| found.contains(j))
            .collect()
    }

    /// Services that must be stopped before `i` may stop: those ordered after it.
    pub fn stop_before(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.after
            .iter()
            .enumerate()
            .filter(move |(_, deps)| deps.contains(&i))
            .map(|(j, _)| j)
    }

    /// A start order: every service after what it is ordered after (ties by index).
    pub fn start_order(&self) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.len());
        let mut placed = vec![false; self.len()];
        while order.len() < self.len() {
            let before = order.len();
            for i in 0..self.len() {
                if !placed[i] && self.after[i].iter().all(|&d| placed[d]) {
                    placed[i] = true;
                    order.push(i);
                }
            }
            if order.len() == before {
                break; // unreachable after `build`, which removes cycles
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::manifest::parse;
    use std::path::Path;

    fn spec(name: &str, requires: &[&str], after: &[&str]) -> ServiceSpec {
        let text = format!("exec = \"/bin/true\"\nrequires = {requires:?}\nafter = {after:?}\n");
        parse(Path::new(&format!("/s/{name}.toml")), &text).unwrap()
    }

    fn names(specs: &[ServiceSpec], idx: &[usize]) -> Vec<String> {
        idx.iter().map(|&i| specs[i].name.clone()).collect()
    }

    #[test]
    fn start_order_respects_requires_and_after() {
        let (specs, g, problems) = build(vec![
            spec("web", &["db"], &["log"]),
            spec("db", &["net"], &[]),
            spec("net", &[], &[]),
            spec("log", &[], &[]),
        ]);
        assert!(problems.is_empty());
        let order = names(&specs, &g.start_order());
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert!(
            pos("net") < pos("db") && pos("db") < pos("web") && pos("log") < pos("web"),
            "{order:?}"
        );
    }

    #[test]
    fn missing_requirement_drops_the_chain() {
        let (specs, _, problems) = build(vec![
            spec("a", &["ghost"], &[]),
            spec("b", &["a"], &[]),
            spec("c", &[], &["ghost"]),
        ]);
        assert_eq!(
            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["c"]
        );
        assert_eq!(problems.len(), 2);
        assert!(problems
            .iter()
            .any(|p| p.service == "a" && p.message.contains("ghost")));
        assert!(problems
            .iter()
            .any(|p| p.service == "b" && p.message.contains("\"a\"")));
    }

    #[test]
    fn cycles_are_reported_and_dropped_with_their_dependents() {
        let (specs, _, problems) = build(vec![
            spec("x", &["y"], &[]),
            spec("y", &[], &["x"]),
            spec("z", &["x"], &[]),
            spec("ok", &[], &[]),
        ]);
        assert_eq!(
            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["ok"]
        );
        assert!(problems
            .iter()
            .any(|p| p.service == "x" && p.message.contains("cycle")));
        assert!(problems.iter().any(|p| p.service == "z"));
    }

    #[test]
    fn dependents_are_transitive_and_stop_before_follows_after() {
        let (specs, g, _) = build(vec![
            spec("net", &[], &[]),
            spec("db", &["net"], &[]),
            spec("web", &["db"], &[]),
            spec("cron", &[], &["net"]),
        ]);
        let net = specs.iter().position(|s| s.name == "net").unwrap();
        assert_eq!(names(&specs, &g.dependents(net)), vec!["db", "web"]);
        let mut before: Vec<String> = names(&specs, &g.stop_before(net).collect::<Vec<_>>());
        before.sort();
        assert_eq!(before, vec!["cron", "db"]);
    }
}
