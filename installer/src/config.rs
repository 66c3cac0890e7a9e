//! The `wasmpod` runtime in a containerd config, added and taken out as TOML
//! tables, so a file's comments, order and everyone else's keys stay as they
//! were.

use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value};

/// The runtime name in containerd's CRI config, and the RuntimeClass handler.
pub const HANDLER: &str = "wasmpod";
/// The shim's runtime type (containerd finds `containerd-shim-wasmpod-v1`).
pub const RUNTIME_TYPE: &str = "io.containerd.wasmpod.v1";
/// Annotations containerd passes on to the shim: wasmpod reads its own only.
pub const ANNOTATIONS: &str = "wasmpod.dev/*";
/// The comment on a default runtime the installer wrote out (see
/// [`Config::keep_default_runtime`]); an uninstall removes a table so marked.
pub const DEFAULT_RUNTIME_MARK: &str =
    "added by wasmpod-node-installer: containerd 1.6 keeps runc only if the config names it";
/// The config version written where there is no config yet: containerd 1.6
/// and 1.7 read it, and 2.x migrates it when it loads.
pub const DEFAULT_VERSION: i64 = 2;

/// What can be wrong with a config the installer was given.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not parse; nothing was written.
    #[error("{path} is not valid TOML and was left untouched")]
    Parse {
        /// The host path of the file.
        path: String,
        /// What the parser saw.
        #[source]
        source: toml_edit::TomlError,
    },
    /// A `version` this installer does not know.
    #[error(
        "{path} has config version {version}; wasmpod knows versions 1 and 2 (containerd 1.6, 1.7) and 3 (containerd 2.x)"
    )]
    UnsupportedVersion {
        /// The host path of the file.
        path: String,
        /// The `version` found.
        version: i64,
    },
    /// A key on the way to the runtimes is something other than a table.
    #[error(
        "{path}: `{key}` is not a table, so the wasmpod runtime cannot be added; fix the file by hand"
    )]
    NotATable {
        /// The host path of the file.
        path: String,
        /// The dotted key that is not a table.
        key: String,
    },
    /// Another runtime already has wasmpod's name.
    #[error(
        "{path} already has a runtime named `{HANDLER}` of type `{found}`; wasmpod's would replace it, so nothing was changed: remove or rename that runtime"
    )]
    ForeignRuntime {
        /// The host path of the file.
        path: String,
        /// The other runtime's `runtime_type`.
        found: String,
    },
}

/// A parsed containerd config and the version its keys follow.
#[derive(Debug, Clone)]
pub struct Config {
    path: String,
    doc: DocumentMut,
    version: i64,
}

impl Config {
    /// Parses `text`, the content of host file `path` (used in messages).
    /// A file without keys counts as no config: containerd then runs on its
    /// defaults, and a wasmpod runtime added to it uses `default_version`.
    pub fn parse(path: &str, text: &str, default_version: i64) -> Result<Self, ConfigError> {
        let doc: DocumentMut = text.parse().map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let version = match doc.get("version").and_then(Item::as_integer) {
            Some(version) => version,
            // containerd reads a config without `version` as version 1.
            None if !doc.is_empty() => 1,
            None => default_version,
        };
        if !(1..=3).contains(&version) {
            return Err(ConfigError::UnsupportedVersion {
                path: path.to_owned(),
                version,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            doc,
            version,
        })
    }

    /// Writes `version` into a config that has none yet (a new file), so
    /// containerd does not read it as version 1.
    pub fn ensure_version(&mut self) {
        if self.doc.get("version").is_none() && self.doc.is_empty() {
            self.doc.insert("version", toml_edit::value(self.version));
        }
    }

    /// The config version (1, 2 or 3) the file follows.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Whether no key but `version` is left (comments may be).
    pub fn has_no_keys(&self) -> bool {
        self.doc.iter().all(|(key, _)| key == "version")
    }

    /// Whether nothing but `version` is left, not even a comment.
    pub fn is_empty(&self) -> bool {
        let text = self.render();
        let rest = text.trim().strip_prefix("version").map(str::trim_start);
        text.trim().is_empty()
            || rest
                .and_then(|r| r.strip_prefix('='))
                .is_some_and(|v| v.trim().parse::<i64>().is_ok())
    }

    /// The CRI plugin's table name for this version.
    fn cri_plugin(&self) -> &'static str {
        match self.version {
            1 => "cri",
            2 => "io.containerd.grpc.v1.cri",
            _ => "io.containerd.cri.v1.runtime",
        }
    }

    /// The keys from the top down to `runtimes`.
    fn runtimes_path(&self) -> [&'static str; 4] {
        ["plugins", self.cri_plugin(), "containerd", "runtimes"]
    }

    /// The runc runtime's `SystemdCgroup`, which the wasmpod runtime copies so
    /// that both put pods in the same cgroup tree: the default runtime's if
    /// that is runc, else the one named `runc`.
    pub fn runc_systemd_cgroup(&self) -> Option<bool> {
        let [plugins, cri, containerd, runtimes] = self.runtimes_path();
        let containerd = self.doc.get(plugins)?.get(cri)?.get(containerd)?;
        let runtimes = containerd.get(runtimes)?;
        let default = containerd
            .get("default_runtime_name")
            .and_then(Item::as_str)
            .filter(|name| {
                runtimes
                    .get(name)
                    .and_then(|r| r.get("runtime_type"))
                    .and_then(Item::as_str)
                    == Some("io.containerd.runc.v2")
            })
            .unwrap_or("runc");
        runtimes
            .get(default)?
            .get("options")?
            .get("SystemdCgroup")?
            .as_bool()
    }

    /// Adds the wasmpod runtime with the shim at host path `runtime_path`, or
    /// brings an earlier one's keys up to date; keys someone else added to it
    /// stay. Returns whether anything changed.
    /// `systemd_cgroup` is runc's [`Self::runc_systemd_cgroup`], from this
    /// file or the one a template is rendered into.
    pub fn add_runtime(
        &mut self,
        runtime_path: &str,
        systemd_cgroup: Option<bool>,
    ) -> Result<bool, ConfigError> {
        let path = self.path.clone();
        let keys = self.runtimes_path();
        let mut table: &mut dyn TableLike = self.doc.as_table_mut();
        let mut dotted = String::new();
        for key in keys {
            dotted = if dotted.is_empty() {
                key.to_owned()
            } else {
                format!("{dotted}.{key}")
            };
            table = table
                .entry(key)
                .or_insert_with(|| {
                    let mut parent = Table::new();
                    parent.set_implicit(true);
                    Item::Table(parent)
                })
                .as_table_like_mut()
                .ok_or_else(|| ConfigError::NotATable {
                    path: path.clone(),
                    key: dotted.clone(),
                })?;
        }
        if let Some(found) = table
            .get(HANDLER)
            .and_then(|r| r.get("runtime_type"))
            .and_then(Item::as_str)
            .filter(|found| *found != RUNTIME_TYPE)
        {
            return Err(ConfigError::ForeignRuntime {
                path,
                found: found.to_owned(),
            });
        }
        let indent = (!table.contains_key(HANDLER)).then(|| sibling_indent(&*table));
        let runtime = table
            .entry(HANDLER)
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_like_mut()
            .ok_or_else(|| ConfigError::NotATable {
                path: path.clone(),
                key: format!("{dotted}.{HANDLER}"),
            })?;
        let mut changed = set(runtime, "runtime_type", Value::from(RUNTIME_TYPE));
        // An absolute path rather than containerd's PATH: the shim stays out
        // of the host's bin directories, and k3s does not rewrite its type.
        changed |= set(runtime, "runtime_path", Value::from(runtime_path));
        for key in ["pod_annotations", "container_annotations"] {
            changed |= set(runtime, key, Value::Array(Array::from_iter([ANNOTATIONS])));
        }
        if let Some(systemd_cgroup) = systemd_cgroup {
            let options = runtime
                .entry("options")
                .or_insert_with(|| Item::Table(Table::new()))
                .as_table_like_mut()
                .ok_or_else(|| ConfigError::NotATable {
                    path,
                    key: format!("{dotted}.{HANDLER}.options"),
                })?;
            changed |= set(options, "SystemdCgroup", Value::from(systemd_cgroup));
        }
        if let (Some((header, keys)), Some(runtime)) =
            (indent, table.get_mut(HANDLER).and_then(Item::as_table_mut))
        {
            indent_table(runtime, &header, &keys);
        }
        Ok(changed)
    }

    /// Writes out the default runtime (runc) where a version 1 or 2 config
    /// leaves it to containerd's defaults. containerd 1.6 drops its default
    /// runtimes once a config names any runtime, and its CRI plugin then
    /// fails to load (`no corresponding runtime configured in
    /// containerd.runtimes for default_runtime_name "runc"`); 1.7 and 2.x
    /// merge them. The table is marked, so that an uninstall takes it out
    /// with the wasmpod runtime. Returns whether anything changed.
    pub fn keep_default_runtime(&mut self) -> bool {
        if self.version >= 3 {
            return false;
        }
        let keys = self.runtimes_path();
        let Some(containerd) = walk_mut(self.doc.as_table_mut(), &keys[..3]) else {
            return false;
        };
        let default = containerd
            .get("default_runtime_name")
            .and_then(Item::as_str)
            .unwrap_or("runc")
            .to_owned();
        if default != "runc" {
            // Not containerd's own default: the file's business, not ours.
            return false;
        }
        let Some(runtimes) = containerd
            .get_mut(keys[3])
            .and_then(Item::as_table_like_mut)
        else {
            return false;
        };
        if runtimes.contains_key(&default) {
            return false;
        }
        let (header, keys_indent) = sibling_indent(&*runtimes);
        let mut runc = Table::new();
        runc.insert("runtime_type", toml_edit::value("io.containerd.runc.v2"));
        indent_table(&mut runc, &header, &keys_indent);
        runc.decor_mut()
            .set_prefix(format!("\n{header}# {DEFAULT_RUNTIME_MARK}\n{header}"));
        // Before wasmpod's, where containerd's own would be: tables without
        // a position print in the order they went in.
        let wasmpod = runtimes.remove(HANDLER);
        runtimes.insert(&default, Item::Table(runc));
        if let Some(wasmpod) = wasmpod {
            runtimes.insert(HANDLER, wasmpod);
        }
        true
    }

    /// Takes the wasmpod runtime out, and the tables on its way that are
    /// left empty and have no header of their own (they print as nothing, so
    /// the rest of the file reads as before). A runtime of that name but of
    /// another type is not wasmpod's and stays. Returns whether anything
    /// changed.
    pub fn remove_runtime(&mut self) -> bool {
        let keys = self.runtimes_path();
        let removed = walk_mut(self.doc.as_table_mut(), &keys).is_some_and(|runtimes| {
            let ours = runtimes
                .get(HANDLER)
                .and_then(|r| r.get("runtime_type"))
                .and_then(Item::as_str)
                == Some(RUNTIME_TYPE);
            let removed = ours && runtimes.remove(HANDLER).is_some();
            if removed {
                let marked = |(name, item): (&str, &Item)| {
                    item.as_table()
                        .and_then(|t| t.decor().prefix())
                        .and_then(|p| p.as_str())
                        .is_some_and(|p| p.contains(DEFAULT_RUNTIME_MARK))
                        .then(|| name.to_owned())
                };
                let added: Vec<String> = runtimes.iter().filter_map(marked).collect();
                for name in added {
                    runtimes.remove(&name);
                }
            }
            removed
        });
        if removed {
            for depth in (0..keys.len()).rev() {
                let Some(parent) = walk_mut(self.doc.as_table_mut(), &keys[..depth]) else {
                    break;
                };
                let prunable = parent
                    .get(keys[depth])
                    .and_then(Item::as_table)
                    .is_some_and(|t| t.is_empty() && t.is_implicit());
                if !prunable {
                    break;
                }
                parent.remove(keys[depth]);
            }
        }
        removed
    }

    /// The config as text.
    pub fn render(&self) -> String {
        self.doc.to_string()
    }
}

/// The indentation of the first runtime table beside ours, header and keys,
/// so that a new one lines up with a file's own (containerd's defaults
/// indent by depth; most hand-written files do not).
fn sibling_indent(runtimes: &dyn TableLike) -> (String, String) {
    let last_line = |raw: Option<&str>| {
        raw.unwrap_or("")
            .rsplit('\n')
            .next()
            .unwrap_or("")
            .to_owned()
    };
    runtimes
        .iter()
        .find_map(|(_, item)| item.as_table())
        .map(|sibling| {
            let header = last_line(sibling.decor().prefix().and_then(|p| p.as_str()));
            let keys = sibling
                .iter()
                .next()
                .and_then(|(key, _)| sibling.key(key))
                .map(|key| last_line(key.leaf_decor().prefix().and_then(|p| p.as_str())))
                .unwrap_or_else(|| header.clone());
            (header, keys)
        })
        .unwrap_or_default()
}

/// Indents a new table and its subtables like their siblings.
fn indent_table(table: &mut Table, header: &str, keys: &str) {
    table.decor_mut().set_prefix(format!("\n{header}"));
    let step = keys.strip_prefix(header).unwrap_or("").to_owned();
    let names: Vec<String> = table.iter().map(|(key, _)| key.to_owned()).collect();
    for name in names {
        if let Some(sub) = table.get_mut(&name).and_then(Item::as_table_mut) {
            indent_table(sub, &format!("{header}{step}"), &format!("{keys}{step}"));
        } else if let Some(mut key) = table.key_mut(&name) {
            key.leaf_decor_mut().set_prefix(keys.to_owned());
        }
    }
}

/// Follows `keys` down from `table`.
fn walk_mut<'a>(mut table: &'a mut dyn TableLike, keys: &[&str]) -> Option<&'a mut dyn TableLike> {
    for key in keys {
        table = table.get_mut(key)?.as_table_like_mut()?;
    }
    Some(table)
}

/// Sets `key` to `value` unless it already holds that value (so a second run
/// rewrites nothing, not even the formatting). Returns whether it changed.
fn set(table: &mut dyn TableLike, key: &str, value: Value) -> bool {
    let same = table
        .get(key)
        .and_then(Item::as_value)
        .is_some_and(|old| same_value(old, &value));
    if !same {
        table.insert(key, Item::Value(value));
    }
    !same
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.value() == b.value(),
        (Value::Boolean(a), Value::Boolean(b)) => a.value() == b.value(),
        (Value::Integer(a), Value::Integer(b)) => a.value() == b.value(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b.iter()).all(|(a, b)| same_value(a, b))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIM: &str = "/opt/wasmpod/bin/containerd-shim-wasmpod-v1";

    fn add(config: &mut Config) -> Result<bool, ConfigError> {
        let systemd_cgroup = config.runc_systemd_cgroup();
        config.add_runtime(SHIM, systemd_cgroup)
    }

    fn parse(text: &str) -> Config {
        Config::parse("/etc/containerd/config.toml", text, DEFAULT_VERSION).expect("parses")
    }

    #[test]
    fn no_config_gets_a_version_2_one_with_only_the_runtime() {
        let mut config = parse("");
        config.ensure_version();
        assert!(add(&mut config).expect("adds"));
        assert_eq!(
            config.render(),
            "version = 2\n\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmpod]\n\
             runtime_type = \"io.containerd.wasmpod.v1\"\n\
             runtime_path = \"/opt/wasmpod/bin/containerd-shim-wasmpod-v1\"\n\
             pod_annotations = [\"wasmpod.dev/*\"]\n\
             container_annotations = [\"wasmpod.dev/*\"]\n"
        );
        assert!(config.remove_runtime());
        assert!(config.is_empty());
    }

    #[test]
    fn version_3_uses_the_cri_runtime_plugin_and_copies_systemd_cgroup() {
        let text = "version = 3\n\
                    [plugins.'io.containerd.cri.v1.runtime'.containerd]\n\
                    default_runtime_name = 'runc'\n\
                    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n\
                    runtime_type = 'io.containerd.runc.v2'\n\
                    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n\
                    SystemdCgroup = true\n";
        let mut config = parse(text);
        assert_eq!(config.runc_systemd_cgroup(), Some(true));
        assert!(add(&mut config).expect("adds"));
        let out = config.render();
        assert!(
            out.starts_with(text),
            "the original stays as it was:\n{out}"
        );
        assert!(out.contains(
            "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.wasmpod.options]\nSystemdCgroup = true\n"
        ), "{out}");
        assert!(config.remove_runtime());
        assert_eq!(config.render(), text);
    }

    #[test]
    fn runc_is_written_out_beside_wasmpod_for_containerd_1_and_taken_out_with_it() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/usr/lib/cni\"\n";
        let mut config = parse(text);
        add(&mut config).expect("adds");
        assert!(config.keep_default_runtime());
        assert!(!config.keep_default_runtime(), "once");
        let out = config.render();
        let runc = out.find("runtimes.runc]").expect("runc written out");
        assert!(
            runc < out.find("runtimes.wasmpod]").expect("wasmpod"),
            "{out}"
        );
        assert!(out.contains(DEFAULT_RUNTIME_MARK), "{out}");
        let mut again = parse(&out);
        assert!(!again.keep_default_runtime(), "a second run adds nothing");
        assert!(again.remove_runtime());
        assert_eq!(again.render(), text);
        // A runc of the file's own stays, and so does a version 3 config's nothing.
        let mut own = parse(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n",
        );
        add(&mut own).expect("adds");
        assert!(!own.keep_default_runtime());
        assert!(own.remove_runtime());
        assert!(own.render().contains("runtimes.runc]"));
        let mut v3 = parse("version = 3\n");
        add(&mut v3).expect("adds");
        assert!(!v3.keep_default_runtime());
    }

    #[test]
    fn a_second_add_changes_nothing() {
        let mut config = parse("version = 2\n");
        assert!(add(&mut config).expect("adds"));
        let once = config.render();
        let mut again = parse(&once);
        assert!(!add(&mut again).expect("adds"));
        assert_eq!(again.render(), once);
    }

    #[test]
    fn keys_someone_added_to_the_runtime_stay_and_stale_ones_are_fixed() {
        let text = "version = 2\n\
                    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmpod]\n\
                    runtime_type = \"io.containerd.wasmpod.v1\"\n\
                    pod_annotations = [\"other/*\"]\n\
                    privileged_without_host_devices = true\n";
        let mut config = parse(text);
        assert!(add(&mut config).expect("adds"));
        let out = config.render();
        assert!(
            out.contains("privileged_without_host_devices = true"),
            "{out}"
        );
        assert!(
            out.contains("pod_annotations = [\"wasmpod.dev/*\"]"),
            "{out}"
        );
    }

    #[test]
    fn another_runtime_named_wasmpod_is_refused_and_kept_on_removal() {
        let text = "version = 2\n\
                    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmpod]\n\
                    runtime_type = \"io.containerd.wasmtime.v1\"\n";
        let mut config = parse(text);
        let error = add(&mut config).expect_err("refused");
        assert!(
            error.to_string().contains("io.containerd.wasmtime.v1"),
            "{error}"
        );
        assert!(!config.remove_runtime());
        assert_eq!(config.render(), text);
    }

    #[test]
    fn a_config_without_version_is_version_1() {
        let mut config = parse("[plugins.cri]\n  sandbox_image = \"pause:3.9\"\n");
        assert_eq!(config.version(), 1);
        add(&mut config).expect("adds");
        assert!(
            config
                .render()
                .contains("[plugins.cri.containerd.runtimes.wasmpod]")
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_path() {
        let error = Config::parse("/etc/c.toml", "version = [", 2).expect_err("refused");
        assert!(
            error
                .to_string()
                .starts_with("/etc/c.toml is not valid TOML"),
            "{error}"
        );
        let error = Config::parse("/etc/c.toml", "version = 4\n", 2).expect_err("refused");
        assert!(error.to_string().contains("config version 4"), "{error}");
        let mut config = parse("version = 2\nplugins = 3\n");
        let error = add(&mut config).expect_err("refused");
        assert!(
            error.to_string().contains("`plugins` is not a table"),
            "{error}"
        );
    }
}
