//! `wasmpod-node-installer`: run by the chart's DaemonSet on every node of
//! the pool (install) and by its uninstall hook (uninstall), with the
//! host's `/` mounted at `--host-root`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};
use wasmpod_installer::canary::Canary;
use wasmpod_installer::layout::{self, Flavour, HostRoot};
use wasmpod_installer::node::{self, EventType, Mark};
use wasmpod_installer::restart::{self, Method};
use wasmpod_installer::shim_file::{self, Shim};
use wasmpod_installer::state::State;
use wasmpod_installer::{config, health, plan};

#[derive(Parser)]
#[command(
    version,
    about = "Puts wasmpod's shim into this node's containerd, or takes it out"
)]
struct Cli {
    /// Where the host's `/` is mounted.
    #[arg(long, default_value = "/host", global = true)]
    host_root: PathBuf,
    /// The containerd layout; detected when not given (rke2, k3s, k0s,
    /// microk8s, then plain containerd).
    #[arg(long, global = true)]
    layout: Option<Flavour>,
    /// The config plain containerd reads (host path).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The version of a config the installer creates where there is none
    /// (2 is read by containerd 1.6, 1.7 and 2.x).
    #[arg(long, default_value_t = config::DEFAULT_VERSION, global = true)]
    config_version: i64,
    /// Where the shim and the installer's record go (host path).
    #[arg(long, default_value = "/opt/wasmpod", global = true)]
    install_dir: PathBuf,
    /// A directory on containerd's PATH for a link to the shim (host path):
    /// containerd 1.6 finds shims there only; empty for none.
    // clap's PathBuf parser refuses an empty value; an OsString one takes it.
    #[arg(long, default_value = "/usr/local/bin", global = true,
          value_parser = clap::builder::ValueParser::os_string())]
    bin_dir: std::ffi::OsString,
    /// How containerd is restarted after a change.
    #[arg(long, value_enum, default_value = "systemd", global = true)]
    restart: Method,
    /// Print what would change, as a unified diff, and change nothing.
    #[arg(long, global = true)]
    dry_run: bool,
    /// containerd's socket (host path); by default from the config it reads,
    /// else the layout's usual one.
    #[arg(long, global = true)]
    containerd_socket: Option<PathBuf>,
    /// How long containerd may take to come back healthy after a restart.
    #[arg(long, default_value_t = 60, global = true)]
    health_timeout: u64,
    /// After success, stay running until SIGTERM: a DaemonSet's pod must
    /// not exit, or it is started again.
    #[arg(long, global = true)]
    stay: bool,
    /// This node's name in Kubernetes, for its ready label and events (the
    /// chart passes spec.nodeName); without it, or outside a pod, no label.
    #[arg(long, env = "NODE_NAME", global = true)]
    node_name: Option<String>,
    /// The pod's service account token and the cluster's CA.
    #[arg(long, default_value = node::SERVICE_ACCOUNT_DIR, global = true)]
    service_account: PathBuf,
    /// With --stay, a file (in the pod, not on the host) written once the
    /// command succeeded, which `ready` checks: the DaemonSet's readiness,
    /// so that a rolling update waits for each node's install.
    #[arg(long, global = true)]
    ready_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the shim and the `wasmpod` runtime (a second run changes nothing).
    Install {
        /// The shim to install, inside the installer's image.
        #[arg(long, default_value = wasmpod_installer::image::SHIM_IN_IMAGE)]
        shim: PathBuf,
    },
    /// Take out the runtime, the shim and the record, and nothing else.
    Uninstall,
    /// Wait until no node carries the ready label (the uninstall hook's
    /// last step: every node's uninstaller has finished).
    WaitNodes {
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Exit 0 if --ready-file exists (the readiness probe), else 1.
    Ready,
    /// Write the installer's image (this binary, static, and the shim,
    /// FROM scratch) as an OCI image archive.
    Image {
        /// The shim to put in it.
        #[arg(long)]
        shim: PathBuf,
        /// The image's name.
        #[arg(long, default_value = "docker.io/wasmpod/node-installer:latest")]
        reference: String,
        /// The archive to write.
        #[arg(long)]
        output: PathBuf,
    },
    /// Run a command in the host's mount namespace (used for systemctl).
    #[command(hide = true)]
    HostExec {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true)]
        argv: Vec<String>,
    },
}

impl Cli {
    fn health_limit(&self) -> Duration {
        Duration::from_secs(self.health_timeout)
    }

    /// Where the health gate's test container lives (host path).
    fn canary_dir(&self) -> PathBuf {
        self.install_dir.join("canary")
    }

    /// `--bin-dir`, or `None` when it is empty (no PATH link).
    fn path_link_dir(&self) -> Option<&Path> {
        (!self.bin_dir.is_empty()).then(|| Path::new(&self.bin_dir))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMPOD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Install { shim } => install(&cli, shim),
        Command::Uninstall => uninstall(&cli),
        Command::WaitNodes { timeout } => wait_nodes(&cli, *timeout),
        Command::Ready => {
            return match &cli.ready_file {
                Some(file) if file.exists() => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            };
        }
        Command::Image {
            shim,
            reference,
            output,
        } => image(shim, reference, output),
        Command::HostExec { argv } => host_exec(argv),
    };
    match result {
        Ok(()) if cli.stay && !cli.dry_run => stay(cli.ready_file.as_deref()),
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wasmpod-node-installer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn install(cli: &Cli, shim_path: &Path) -> anyhow::Result<()> {
    let cluster = if cli.dry_run { None } else { cluster(cli)? };
    let result = install_here(cli, shim_path, cluster.as_ref());
    if let (Err(error), Some(cluster)) = (&result, &cluster) {
        cluster.event(
            EventType::Warning,
            "WasmpodInstallFailed",
            &format!("{error:#}"),
        );
    }
    result
}

fn install_here(cli: &Cli, shim_path: &Path, cluster: Option<&Cluster>) -> anyhow::Result<()> {
    let host = HostRoot::new(&cli.host_root);
    let layout = layout::detect(&host, cli.layout, cli.config.as_deref())?;
    info!(layout = layout.flavour.name(), config = %layout.target.display(), "containerd layout");
    let machine = nix::sys::utsname::uname().context("uname")?;
    let shim = Shim::read(
        shim_path,
        env!("CARGO_PKG_VERSION"),
        &machine.machine().to_string_lossy(),
    )?;
    let bin_dir = cli.install_dir.join("bin");
    let runtime_path = bin_dir.join(shim_file::LINK);
    let change = plan::install(
        &host,
        &layout,
        &runtime_path.to_string_lossy(),
        cli.config_version,
    )?;
    let recorded = State::load(&host, &cli.install_dir)?;
    let previous_shim = shim_file::current(&host.join(&bin_dir));
    if cli.dry_run {
        print!("{}", change.diff());
        if previous_shim.as_deref() != Some(shim.file_name.as_str()) {
            println!(
                "would install {} and point {} at it",
                bin_dir.join(&shim.file_name).display(),
                runtime_path.display()
            );
        }
        let missing_link = cli.path_link_dir().filter(|dir| {
            let on_path = host.join(dir).join(shim_file::LINK);
            std::fs::read_link(on_path).ok().as_deref() != Some(runtime_path.as_path())
        });
        if let Some(dir) = missing_link {
            println!(
                "would link {} to {} (unless another file has that name)",
                dir.join(shim_file::LINK).display(),
                runtime_path.display()
            );
        }
        let link_missing = missing_link.is_some();
        if !change.changes()
            && previous_shim.as_deref() == Some(shim.file_name.as_str())
            && !link_missing
        {
            println!("nothing to change");
        }
        return Ok(());
    }
    let new_shim = shim.install(&host.join(&bin_dir))?;
    if new_shim {
        info!(shim = %bin_dir.join(&shim.file_name).display(), "shim installed");
    }
    if let Some(dir) = cli.path_link_dir() {
        let on_path = dir.join(shim_file::LINK);
        match shim_file::link_on_path(&host.join(dir), &runtime_path) {
            Ok(shim_file::PathLink::Made) => {
                info!(link = %on_path.display(), "shim linked on containerd's PATH")
            }
            Ok(shim_file::PathLink::Unchanged) => {}
            Ok(shim_file::PathLink::Foreign) => {
                warn!(file = %on_path.display(), "another file has the shim's name there and was left; containerd 1.6 would run it")
            }
            // runtime_path still serves containerd 1.7 and 2.x.
            Err(error) => {
                warn!(%error, "no link on containerd's PATH: containerd 1.6 will not find the shim")
            }
        }
    }
    let changed = change.changes();
    let mut state = State {
        flavour: layout.flavour,
        target: layout.target.clone(),
        created: match &recorded {
            Some(recorded) if recorded.target == layout.target => recorded.created,
            _ => change.before.is_none(),
        },
        previous: if changed {
            change.before.clone()
        } else {
            recorded.as_ref().and_then(|r| r.previous.clone())
        },
        shim: shim.file_name.clone(),
        verified: !changed && recorded.as_ref().is_some_and(|r| r.verified),
    };
    // The record goes first: an installer stopped after the config change
    // still knows what to roll back to.
    State::change(&host, &cli.install_dir, Some(&state))?.apply(&host)?;
    // A change recorded but never seen healthy (the last run was stopped
    // after its restart, or restarted nothing) is finished as if new.
    let resumed = !changed && recorded.as_ref().is_some_and(|r| !r.verified);
    if changed {
        change.apply(&host)?;
        info!(config = %layout.target.display(), "wasmpod runtime added to the containerd config");
    } else if resumed {
        info!(config = %layout.target.display(), "the containerd config has the wasmpod runtime, not yet seen healthy");
    } else {
        info!(config = %layout.target.display(), "the containerd config already has the wasmpod runtime");
    }
    if changed || resumed {
        restart::restart(cli.restart, &layout, false, run_in_host)?;
        if cli.restart == Method::None {
            warn!(
                "containerd was not restarted (restart method none): it reads the change at its next start"
            );
        } else {
            info!(method = ?cli.restart, "containerd restarted");
        }
    }
    // Whether this run saw a test container run through the runtime.
    let mut gated = false;
    if cli.restart != Method::None && !state.verified {
        let socket = socket(cli, &host, &layout, change.after.as_deref())?;
        match wait_healthy(&host, &socket, Some(&cli.canary_dir()), cli.health_limit()) {
            Ok(version) => {
                gated = true;
                info!(%version, socket = %socket.display(), "containerd is healthy and lists the wasmpod runtime")
            }
            Err(error) if changed || resumed => {
                // From the config before the installer's change to now.
                let undo = plan::FileChange {
                    path: layout.target.clone(),
                    before: state.previous.clone(),
                    after: change.after.clone(),
                };
                let error = roll_back(cli, &host, &layout, &undo, &socket, error);
                if let Some(cluster) = cluster {
                    // The runtime is gone again: no Wasm pod may come here.
                    if let Err(error) = cluster.mark(Mark::Gone) {
                        warn!(%error, "the ready label could not be taken off");
                    }
                }
                return Err(error);
            }
            // Not a change of this installer's: nothing of ours to put back.
            Err(error) => return Err(error.into()),
        }
        state.verified = true;
        State::change(&host, &cli.install_dir, Some(&state))?.apply(&host)?;
    } else if cli.restart == Method::None && !state.verified {
        // Someone else restarts containerd: one look says whether it has.
        let socket = socket(cli, &host, &layout, change.after.as_deref())?;
        match wait_healthy(&host, &socket, Some(&cli.canary_dir()), Duration::ZERO) {
            Ok(version) => {
                gated = true;
                info!(%version, "containerd lists the wasmpod runtime");
                state.verified = true;
                State::change(&host, &cli.install_dir, Some(&state))?.apply(&host)?;
            }
            Err(error) => {
                warn!(%error, "containerd does not run the wasmpod runtime yet: the node is labelled ready once it does and the installer runs again")
            }
        }
    }
    if new_shim && state.verified && !gated {
        // Only the shim changed, which containerd runs afresh for each new
        // pod without a restart: it gets the test container too, and a shim
        // that fails it makes way for the one before.
        let socket = socket(cli, &host, &layout, change.after.as_deref())?;
        if let Err(error) =
            wait_healthy(&host, &socket, Some(&cli.canary_dir()), cli.health_limit())
        {
            let back = previous_shim
                .as_deref()
                .filter(|previous| *previous != shim.file_name);
            let Some(previous) = back else {
                if let Some(cluster) = cluster
                    && let Err(error) = cluster.mark(Mark::Gone)
                {
                    warn!(%error, "the ready label could not be taken off");
                }
                return Err(anyhow::anyhow!(
                    "{error}; there is no earlier shim to go back to"
                ));
            };
            error!(%error, shim = shim.file_name, "the new shim does not run a Wasm container; going back to the one before");
            shim_file::point_link(&host.join(&bin_dir), previous)?;
            state.shim = previous.to_owned();
            State::change(&host, &cli.install_dir, Some(&state))?.apply(&host)?;
            return Err(anyhow::anyhow!(
                "{error}; {} points at {previous} again",
                runtime_path.display()
            ));
        }
    }
    if let Some(cluster) = cluster.filter(|_| state.verified) {
        cluster.mark(Mark::Ready)?;
        info!(
            label = node::READY_LABEL,
            node = cluster.node,
            "node labelled ready for Wasm pods"
        );
        if changed || resumed || new_shim {
            cluster.event(
                EventType::Normal,
                "WasmpodInstalled",
                &format!(
                    "shim {} installed; containerd runs the wasmpod runtime",
                    shim.file_name
                ),
            );
        }
    }
    let mut keep = vec![shim.file_name.as_str()];
    keep.extend(previous_shim.as_deref());
    for old in shim_file::prune(&host.join(&bin_dir), &keep)? {
        info!(shim = old, "older shim removed");
    }
    Ok(())
}

fn uninstall(cli: &Cli) -> anyhow::Result<()> {
    let cluster = if cli.dry_run { None } else { cluster(cli)? };
    if let Some(cluster) = &cluster {
        // First, so that no new Wasm pod is scheduled here meanwhile.
        if let Err(error) = cluster.mark(Mark::Leaving) {
            warn!(%error, "the node could not be marked as uninstalling; uninstalling anyway");
        }
    }
    let result = uninstall_here(cli);
    if let Some(cluster) = &cluster {
        match &result {
            Ok(()) => {
                cluster.mark(Mark::Gone)?;
                info!(
                    label = node::READY_LABEL,
                    node = cluster.node,
                    "ready label taken off"
                );
                cluster.event(
                    EventType::Normal,
                    "WasmpodUninstalled",
                    "the wasmpod runtime and shim were taken out of containerd",
                );
            }
            Err(error) => cluster.event(
                EventType::Warning,
                "WasmpodUninstallFailed",
                &format!("{error:#}"),
            ),
        }
    }
    result
}

fn uninstall_here(cli: &Cli) -> anyhow::Result<()> {
    let host = HostRoot::new(&cli.host_root);
    let recorded = State::load(&host, &cli.install_dir)?;
    // What the install recorded wins over a new detection.
    let (flavour, config) = match &recorded {
        Some(r) => (
            Some(r.flavour),
            (r.flavour == Flavour::Containerd).then(|| r.target.clone()),
        ),
        None => (cli.layout, cli.config.clone()),
    };
    let layout = layout::detect(&host, flavour, config.as_deref())?;
    let created = recorded.as_ref().is_some_and(|r| r.created);
    let change = plan::uninstall(&host, &layout, created)?;
    let bin_dir = host.join(cli.install_dir.join("bin"));
    if cli.dry_run {
        print!("{}", change.diff());
        if bin_dir.exists() {
            println!("would remove {}", cli.install_dir.join("bin").display());
        }
        return Ok(());
    }
    if change.changes() {
        let socket = socket(cli, &host, &layout, change.before.as_deref())?;
        change.apply(&host)?;
        info!(config = %layout.target.display(), "wasmpod runtime taken out of the containerd config");
        restart::restart(cli.restart, &layout, false, run_in_host)?;
        if cli.restart != Method::None {
            let version = wait_healthy(&host, &socket, None, cli.health_limit())?;
            info!(%version, "containerd is healthy without the wasmpod runtime");
        }
    } else {
        info!(config = %layout.target.display(), "the containerd config has no wasmpod runtime");
    }
    if let Some(dir) = cli.path_link_dir() {
        let runtime_path = cli.install_dir.join("bin").join(shim_file::LINK);
        if shim_file::unlink_from_path(&host.join(dir), &runtime_path)? {
            info!(link = %dir.join(shim_file::LINK).display(), "shim link removed from containerd's PATH");
        }
    }
    for old in shim_file::prune(&bin_dir, &[])? {
        info!(shim = old, "shim removed");
    }
    Canary::remove_files(&host.join(cli.canary_dir()))
        .with_context(|| format!("removing {}", cli.canary_dir().display()))?;
    State::change(&host, &cli.install_dir, None)?.apply(&host)?;
    for dir in [bin_dir, host.join(&cli.install_dir)] {
        // Only when empty: anything else there is not the installer's.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// This node's object in the Kubernetes API.
struct Cluster {
    api: node::Api,
    node: String,
    runtime: tokio::runtime::Runtime,
}

/// The node's API object when the installer runs in a pod that names its
/// node; `None` when run by hand on a host.
fn cluster(cli: &Cli) -> anyhow::Result<Option<Cluster>> {
    let Some(api) = node::Api::from_env(&cli.service_account)? else {
        info!("not in a Kubernetes pod: no node label and no events");
        return Ok(None);
    };
    let Some(node) = cli.node_name.clone() else {
        warn!("no --node-name (NODE_NAME): no node label and no events");
        return Ok(None);
    };
    Ok(Some(Cluster {
        api,
        node,
        runtime: current_thread()?,
    }))
}

impl Cluster {
    /// Sets the label, trying again for a few seconds: an API server may be
    /// restarting, and without the label no Wasm pod comes to the node.
    fn mark(&self, mark: Mark) -> Result<(), node::NodeError> {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.runtime.block_on(self.api.mark(&self.node, mark)) {
                Ok(()) => return Ok(()),
                Err(error) if delay <= Duration::from_secs(4) => {
                    warn!(%error, "labelling the node failed; trying again");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Posts an event on the node; one that cannot be posted is only logged.
    fn event(&self, kind: EventType, reason: &str, message: &str) {
        let posted = self
            .runtime
            .block_on(self.api.event(&self.node, kind, reason, message));
        if let Err(error) = posted {
            warn!(%error, reason, "event not posted");
        }
    }
}

/// Waits until no node has the ready label, saying which still do.
fn wait_nodes(cli: &Cli, timeout: u64) -> anyhow::Result<()> {
    let api = node::Api::from_env(&cli.service_account)?
        .context("not in a Kubernetes pod: KUBERNETES_SERVICE_HOST and _PORT are not set")?;
    let runtime = current_thread()?;
    let start = std::time::Instant::now();
    let mut said = None;
    loop {
        let left = match runtime.block_on(api.labelled()) {
            Ok(left) if left.is_empty() => {
                info!(
                    label = node::READY_LABEL,
                    "no node has the label: every node is uninstalled"
                );
                return Ok(());
            }
            Ok(left) => left
                .iter()
                .map(|(name, value)| format!("{name} ({value})"))
                .collect::<Vec<_>>()
                .join(", "),
            Err(error) => format!("unknown: {error}"),
        };
        if start.elapsed() > Duration::from_secs(timeout) {
            anyhow::bail!(
                "after {timeout} s these nodes still have the {} label: {left}; the node-uninstaller pod's log on each says why",
                node::READY_LABEL
            );
        }
        if said.as_ref() != Some(&left) {
            info!(nodes = left, "waiting for the nodes' uninstallers");
            said = Some(left);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start an async runtime")
}

/// The socket containerd serves on (host path): `--containerd-socket`, or
/// `[grpc] address` of the config it reads (`config`, the target's text,
/// for a TOML layout; the generated config for a template), or the
/// layout's usual one.
fn socket(
    cli: &Cli,
    host: &HostRoot,
    layout: &layout::Layout,
    config: Option<&str>,
) -> anyhow::Result<PathBuf> {
    if let Some(socket) = &cli.containerd_socket {
        return Ok(socket.clone());
    }
    let default = layout.flavour.default_socket();
    Ok(match &layout.edit {
        layout::Edit::Toml => health::socket_of(config, default),
        layout::Edit::TemplateBlock { generated } => {
            health::socket_of(plan::read_host(host, generated)?.as_deref(), default)
        }
        layout::Edit::DropIn => PathBuf::from(default),
    })
}

/// Waits for containerd on host socket `socket` to answer, with (`canary`
/// given) or without the wasmpod handler in its CRI; returns its version.
/// With the handler listed, a test Wasm container then runs through it,
/// its files in host directory `canary`.
fn wait_healthy(
    host: &HostRoot,
    socket: &Path,
    canary: Option<&Path>,
    limit: Duration,
) -> Result<String, health::HealthError> {
    let runtime =
        current_thread().map_err(|error| health::HealthError::Unreachable(format!("{error:#}")))?;
    let socket = host.join(socket);
    runtime.block_on(async {
        let healthy = health::wait(&socket, config::HANDLER, canary.is_some(), limit).await?;
        let (Some(dir), Some(shim)) = (canary, healthy.runtime) else {
            return Ok(healthy.version);
        };
        let canary = Canary {
            runtime: shim.clone(),
            host_dir: dir.to_owned(),
            dir: host.join(dir),
        };
        let failed = |cause| health::HealthError::Canary {
            version: healthy.version.clone(),
            runtime: shim.clone(),
            cause,
        };
        let channel = containerd_client::connect(&socket)
            .await
            .map_err(|error| health::HealthError::Unreachable(wasmpod_oci::error_chain(&error)))?;
        canary.run(channel).await.map_err(failed)?;
        info!(
            runtime = shim,
            "a test Wasm container ran through the wasmpod runtime"
        );
        Ok(healthy.version)
    })
}

/// Puts the config back as it was after a failed health check, restarts
/// containerd again, and says both what failed and where that left it.
fn roll_back(
    cli: &Cli,
    host: &HostRoot,
    layout: &layout::Layout,
    change: &plan::FileChange,
    socket: &Path,
    failure: health::HealthError,
) -> anyhow::Error {
    error!(error = %failure, "containerd is not healthy with the change; putting the previous config back");
    let outcome = change
        .reversed()
        .apply(host)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            restart::restart(cli.restart, layout, true, run_in_host).map_err(anyhow::Error::from)
        })
        .and_then(|()| {
            wait_healthy(host, socket, None, cli.health_limit()).map_err(anyhow::Error::from)
        });
    match outcome {
        Ok(version) => {
            info!(%version, "the previous config is back and containerd is healthy");
            anyhow::anyhow!(
                "{failure}; the previous config of {} was put back and containerd {version} is healthy again",
                layout.target.display()
            )
        }
        Err(error) => {
            anyhow::anyhow!("{failure}; putting the previous config back failed too: {error:#}")
        }
    }
}

/// Marks the pod ready (`ready_file`) and waits for SIGTERM or SIGINT,
/// which as a container's pid 1 would otherwise be ignored.
fn stay(ready_file: Option<&Path>) -> ExitCode {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(error) = signals.thread_block() {
        eprintln!("wasmpod-node-installer: cannot wait for SIGTERM: {error}");
        return ExitCode::FAILURE;
    }
    if let Some(file) = ready_file
        && let Err(error) = std::fs::write(file, b"ready\n")
    {
        eprintln!(
            "wasmpod-node-installer: cannot write the ready file {}: {error}",
            file.display()
        );
        return ExitCode::FAILURE;
    }
    info!("done; staying until the pod is stopped");
    match signals.wait() {
        Ok(signal) => info!(?signal, "stopping"),
        Err(error) => warn!(%error, "waiting for a signal failed"),
    }
    ExitCode::SUCCESS
}

fn image(shim: &Path, reference: &str, output: &Path) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("find this binary")?;
    let architecture = wasmpod_oci::host_architecture();
    wasmpod_installer::image::write(&me, shim, reference, architecture, output)?;
    println!("{} ({reference})", output.display());
    Ok(())
}

/// Runs `argv` through this binary's hidden `host-exec`, which enters the
/// host's mount namespace first (a fresh single-threaded process can).
fn run_in_host(argv: &[&str]) -> Result<(), String> {
    let status = std::process::Command::new("/proc/self/exe")
        .arg("host-exec")
        .args(argv)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|error| error.to_string())?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| status.to_string())
}

fn host_exec(argv: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let ns = std::fs::File::open("/proc/1/ns/mnt")
        .context("open /proc/1/ns/mnt (the pod needs hostPID)")?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)
        .context("enter the host's mount namespace")?;
    let (program, args) = argv.split_first().context("no command")?;
    Err(std::process::Command::new(program).args(args).exec())
        .with_context(|| format!("run {program} on the host"))
}
