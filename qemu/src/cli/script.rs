//! Which `--script` commands end the guest. Those are typed as they are (nothing follows
//! them); every other command runs through `Vm::run_command_status`, which knows when it
//! finished and how it exited.

/// How a command ends the guest, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    PowerOff,
    Reboot,
    Halt,
}

/// Recognises `poweroff`, `reboot`, `halt`, with or without `tessera`/`busybox` in front
/// and with options (`poweroff -f`).
pub fn shutdown_kind(cmd: &str) -> Option<Shutdown> {
    let mut words = cmd.split_whitespace();
    let mut first = words.next()?;
    if matches!(base(first), "tessera" | "busybox") {
        first = words.next()?;
    }
    match base(first) {
        "poweroff" => Some(Shutdown::PowerOff),
        "reboot" => Some(Shutdown::Reboot),
        "halt" => Some(Shutdown::Halt),
        _ => None,
    }
}

fn base(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// The command list actually typed: the user's, plus `tessera poweroff` when the last one
/// does not end the guest.
pub fn with_final_poweroff(script: &[String]) -> Vec<String> {
    let mut cmds = script.to_vec();
    if cmds.last().and_then(|c| shutdown_kind(c)).is_none() {
        cmds.push("tessera poweroff".to_string());
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_commands_are_recognised_in_their_usual_spellings() {
        assert_eq!(shutdown_kind("tessera poweroff"), Some(Shutdown::PowerOff));
        assert_eq!(shutdown_kind("poweroff -f"), Some(Shutdown::PowerOff));
        assert_eq!(shutdown_kind("/sbin/reboot"), Some(Shutdown::Reboot));
        assert_eq!(shutdown_kind("busybox halt"), Some(Shutdown::Halt));
        assert_eq!(shutdown_kind("tessera status"), None);
        assert_eq!(shutdown_kind("echo poweroff"), None);
        assert_eq!(shutdown_kind(""), None);
    }

    #[test]
    fn tessera_poweroff_is_added_unless_the_script_ends_the_guest() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            with_final_poweroff(&s(&["tessera status"])),
            s(&["tessera status", "tessera poweroff"])
        );
        assert_eq!(
            with_final_poweroff(&s(&["uname -a", "reboot"])),
            s(&["uname -a", "reboot"])
        );
    }
}
