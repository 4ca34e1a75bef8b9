//! The protocol for running a command on the guest's console shell and reading back its
//! output and exit status.
//!
//! The whole command goes on one typed line,
//! `echo TESSERA-CMD""-START-7; eval '<cmd>'; echo TESSERA-CMD""-END-7 rc=$?`,
//! typed only when the shell is idle. Its echo shows `TESSERA-CMD""-START-7`, while running
//! it prints `TESSERA-CMD-START-7`: waiters match output, never the echo.
//! Nothing is typed while a command runs, so the echo cannot land inside its output, and
//! `eval` keeps comments or a trailing `&` in the command from swallowing the end marker.

/// Typed to learn whether the shell reads input; its output contains `PROBE_OUTPUT`.
pub fn probe(n: u32) -> String {
    format!("echo TESSERA-CMD\"\"-SHELL-{n}")
}
pub const PROBE_OUTPUT: &str = "TESSERA-CMD-SHELL-";

/// The line typed to run `command` as command number `n`.
pub fn command_line(n: u32, command: &str) -> String {
    format!(
        "echo TESSERA-CMD\"\"-START-{n}; eval {}; echo TESSERA-CMD\"\"-END-{n} rc=$?",
        quote(command)
    )
}

/// The output line that precedes the command's output.
pub fn start_output(n: u32) -> String {
    format!("TESSERA-CMD-START-{n}")
}

/// The output line that follows it (the trailing space keeps END-1 from matching END-10).
pub fn end_output(n: u32) -> String {
    format!("TESSERA-CMD-END-{n} rc=")
}

/// The exit status in an end line.
pub fn parse_status(end_line: &str) -> Option<i32> {
    end_line
        .split("rc=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Single-quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_in_the_typed_line_never_match_their_output() {
        let typed = command_line(7, "grep VmRSS /proc/1/status");
        assert!(!typed.contains(&start_output(7)));
        assert!(!typed.contains(&end_output(7)));
        assert!(!probe(3).contains(PROBE_OUTPUT));
    }

    #[test]
    fn the_command_is_quoted_for_eval() {
        assert_eq!(
            command_line(1, "echo 'a b' # note"),
            r#"echo TESSERA-CMD""-START-1; eval 'echo '\''a b'\'' # note'; echo TESSERA-CMD""-END-1 rc=$?"#
        );
    }

    #[test]
    fn end_line_carries_the_exit_status() {
        assert_eq!(parse_status("TESSERA-CMD-END-4 rc=0"), Some(0));
        assert_eq!(parse_status("TESSERA-CMD-END-4 rc=127"), Some(127));
        assert_eq!(parse_status("TESSERA-CMD-END-4"), None);
        assert!(!end_output(1).contains(&end_output(10)));
        assert!(!"TESSERA-CMD-END-10 rc=0".contains(&end_output(1)));
    }
}
