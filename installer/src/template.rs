//! The wasmpod runtime as a marked block in a k3s or rke2 config template.
//! A template is Go text/template, not TOML, so the block is TOML of its
//! own between two marker lines, and the rest of the file is not touched.

/// The line k3s and rke2 expand into the config they would write without a
/// template; a template that starts from it keeps their defaults, also
/// across their upgrades.
pub const BASE: &str = "{{ template \"base\" . }}";
const BEGIN: &str =
    "# BEGIN wasmpod runtime (added by wasmpod-node-installer; its uninstall removes this block)";
const END: &str = "# END wasmpod runtime";

/// `template` with `block` (TOML) as its wasmpod block: appended, or in
/// place of an earlier one. A missing template starts from [`BASE`].
pub fn with_block(template: Option<&str>, block: &str) -> String {
    let rest = match template {
        Some(text) => without_block(text),
        None => format!("{BASE}\n"),
    };
    let mut out = rest;
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push('\n');
    out.push_str(BEGIN);
    out.push('\n');
    out.push_str(block.trim_matches('\n'));
    out.push('\n');
    out.push_str(END);
    out.push('\n');
    out
}

/// `template` without its wasmpod block (and the blank line `with_block`
/// put before it); the text is unchanged if it has none.
pub fn without_block(template: &str) -> String {
    let Some(start) = template.find(BEGIN) else {
        return template.to_owned();
    };
    let end = template[start..]
        .find(END)
        .map_or(template.len(), |at| start + at + END.len());
    let end = if template[end..].starts_with('\n') {
        end + 1
    } else {
        end
    };
    let mut head = template[..start].to_owned();
    if head.ends_with("\n\n") {
        head.pop();
    }
    head + &template[end..]
}

/// Whether a template holds nothing but [`BASE`]: the same as no template.
pub fn only_base(template: &str) -> bool {
    template.trim() == BASE
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.wasmpod]\nruntime_type = 'io.containerd.wasmpod.v1'\n";

    #[test]
    fn a_new_template_starts_from_base_and_removing_the_block_leaves_only_base() {
        let out = with_block(None, BLOCK);
        assert!(
            out.starts_with("{{ template \"base\" . }}\n\n# BEGIN wasmpod"),
            "{out}"
        );
        assert!(out.ends_with("# END wasmpod runtime\n"), "{out}");
        assert!(only_base(&without_block(&out)));
    }

    #[test]
    fn a_users_template_is_kept_around_the_block() {
        let user = "{{ template \"base\" . }}\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '/etc/certs.d'\n";
        let once = with_block(Some(user), BLOCK);
        assert_eq!(
            with_block(Some(&once), BLOCK),
            once,
            "a second run changes nothing"
        );
        assert_eq!(without_block(&once), user);
        // A line the user adds after the block stays when it goes.
        let edited = format!("{once}# mine\n");
        assert_eq!(without_block(&edited), format!("{user}# mine\n"));
    }
}
