//! `manifest.txt`: every file of the image (the initramfs entries and the output files) with
//! its size and origin, so an operator can see exactly what a node runs and where it came from.

use crate::cpio::Kind;
use crate::initramfs::{Origin, Tree};

/// One output file of the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// Path relative to the output directory.
    pub path: String,
    pub size: u64,
    pub origin: Origin,
}

fn row(rows: &mut Vec<(String, String, String)>, path: String, size: String, origin: String) {
    rows.push((path, size, origin));
}

fn align(rows: &[(String, String, String)]) -> String {
    let pw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let sw = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(p, s, o)| format!("{p:<pw$}  {s:>sw$}  {o}\n"))
        .collect()
}

/// Renders the manifest. `header` lines are written as `# ` comments at the top.
pub fn render(header: &[String], outputs: &[OutputFile], tree: &Tree) -> String {
    let mut text = String::from("# Tessera image manifest: path, size in bytes, origin.\n");
    for h in header {
        text.push_str(&format!("# {h}\n"));
    }
    let mut rows = Vec::new();
    for o in outputs {
        row(
            &mut rows,
            o.path.clone(),
            o.size.to_string(),
            o.origin.to_string(),
        );
    }
    text.push_str("\n## output files\n");
    text.push_str(&align(&rows));

    let mut rows = Vec::new();
    for (e, origin) in tree.iter() {
        let (path, size) = match &e.kind {
            Kind::Dir => (format!("/{}/", e.path), "-".to_string()),
            Kind::File(d) => (format!("/{}", e.path), d.len().to_string()),
            Kind::Symlink(t) => (format!("/{} -> {t}", e.path), t.len().to_string()),
            Kind::CharDev { major, minor } => (format!("/{}", e.path), format!("c{major}:{minor}")),
        };
        row(&mut rows, path, size, origin.to_string());
    }
    text.push_str("\n## initramfs (the root file system of a node)\n");
    text.push_str(&align(&rows));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lists_outputs_and_every_entry_with_origin() {
        let mut tree = Tree::new();
        crate::initramfs::add_tessera(&mut tree, vec![0; 10]);
        tree.file(
            "bin/busybox",
            0o755,
            vec![0; 7],
            Origin::Package("busybox-static@1".into()),
        );
        tree.char_dev("dev/console", 0o600, 5, 1);
        let outputs = [OutputFile {
            path: "pxe/vmlinuz".into(),
            size: 42,
            origin: Origin::Package("linux@6".into()),
        }];
        let text = render(&["kernel 6.1".into()], &outputs, &tree);
        assert!(text.contains("# kernel 6.1\n"));
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} in\n{text}"))
        };
        assert!(line("pxe/vmlinuz").ends_with("42  linux@6"));
        assert!(line("/sbin/tessera ").contains(" 10  ours (tessera "));
        assert!(line("/bin/busybox ").ends_with("7  busybox-static@1"));
        assert!(line("/init -> /sbin/tessera").ends_with("generated"));
        assert!(line("/dev/console").contains("c5:1"));
        assert!(line("/sbin/").ends_with("generated"));
    }
}
