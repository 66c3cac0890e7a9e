//! `wasmpod`: package Wasm for wasmpod, push it to a registry, pull it back
//! and inspect it.

mod describe;
mod progress;
mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use oci_wasm::{ToConfig, WasmConfig};

use crate::registry::Registry;

/// Package, push, pull and inspect WebAssembly for the wasmpod runtime.
#[derive(Parser)]
#[command(name = "wasmpod", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Push a .wasm file as a CNCF Wasm OCI artifact.
    Push {
        /// The component or module to push.
        file: PathBuf,
        /// Where: registry/repository:tag.
        reference: String,
        /// Talk HTTP, not HTTPS (a local registry).
        #[arg(long)]
        plain_http: bool,
        /// Extra manifest annotation KEY=VALUE (repeatable).
        #[arg(long = "annotation", value_name = "KEY=VALUE")]
        annotations: Vec<String>,
    },
    /// Pull the Wasm of an artifact (or Wasm image) to a file.
    Pull {
        /// registry/repository:tag or @digest.
        reference: String,
        /// Output file; default: the layer's title, else <repository>.wasm.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Talk HTTP, not HTTPS (a local registry).
        #[arg(long)]
        plain_http: bool,
    },
    /// Show kind, world, imports, exports, size and digest of a file or reference.
    Inspect {
        /// A .wasm file, or a registry reference.
        target: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Talk HTTP, not HTTPS (a local registry).
        #[arg(long)]
        plain_http: bool,
    },
    /// Write an ordinary OCI image tar holding the file, for `ctr images
    /// import` and for containerd that cannot unpack artifacts.
    Image {
        /// The component or module.
        file: PathBuf,
        /// The tar to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Image name recorded in the tar (registry/repository:tag).
        #[arg(long = "ref")]
        reference: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wasmpod: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmpod: {}", wasmpod_oci::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Push {
            file,
            reference,
            plain_http,
            annotations,
        } => push(&file, &reference, plain_http, &annotations).await,
        Command::Pull {
            reference,
            output,
            plain_http,
        } => pull(&reference, output, plain_http).await,
        Command::Inspect {
            target,
            json,
            plain_http,
        } => inspect(&target, json, plain_http).await,
        Command::Image {
            file,
            output,
            reference,
        } => image(&file, &output, &reference),
    }
}

fn read_wasm(file: &Path) -> anyhow::Result<(Vec<u8>, describe::Description)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let description = describe::describe(&file.display().to_string(), &bytes)?;
    Ok((bytes, description))
}

fn file_name(file: &Path) -> anyhow::Result<String> {
    file.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no usable file name", file.display()))
}

async fn push(
    file: &Path,
    reference: &str,
    plain_http: bool,
    extra: &[String],
) -> anyhow::Result<()> {
    let (bytes, description) = read_wasm(file)?;
    let registry = Registry::new(reference, plain_http)?;
    let (config, _) = if description.kind == "component" {
        WasmConfig::from_raw_component(bytes.clone(), None)
    } else {
        WasmConfig::from_raw_module(bytes.clone(), None)
    }
    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let title = file_name(file)?;
    let mut annotations = BTreeMap::from([
        (
            "org.opencontainers.image.created".to_owned(),
            config
                .created
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        ("org.opencontainers.image.title".to_owned(), title.clone()),
    ]);
    for pair in extra {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("annotation {pair:?} is not KEY=VALUE");
        };
        annotations.insert(key.to_owned(), value.to_owned());
    }
    let layer_annotations = BTreeMap::from([("org.opencontainers.image.title".to_owned(), title)]);
    let config = config.to_config().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let digest = registry
        .push(bytes.into(), config, layer_annotations, annotations)
        .await?;
    println!("{}@{digest}", registry.reference());
    Ok(())
}

async fn pull(reference: &str, output: Option<PathBuf>, plain_http: bool) -> anyhow::Result<()> {
    let registry = Registry::new(reference, plain_http)?;
    let resolved = registry.resolve().await?;
    let output = match output {
        Some(path) => path,
        None => {
            let from_title = resolved
                .layer
                .descriptor
                .title()
                .and_then(|t| Path::new(t).file_name())
                .map(PathBuf::from);
            from_title.unwrap_or_else(|| {
                let repo = registry.reference().rsplit('/').next().unwrap_or("app");
                let repo = repo.split([':', '@']).next().unwrap_or("app");
                PathBuf::from(format!("{repo}.wasm"))
            })
        }
    };
    registry.pull_layer(&resolved.layer, &output).await?;
    println!(
        "{} {} ({} bytes, {})",
        output.display(),
        resolved.layer.descriptor.digest,
        resolved.layer.descriptor.size,
        resolved.layer.layout
    );
    Ok(())
}

/// What `inspect` prints for a reference: the registry's view plus the
/// description of the Wasm.
#[derive(serde::Serialize)]
struct Remote {
    reference: String,
    manifest: String,
    layout: String,
    #[serde(flatten)]
    wasm: describe::Description,
}

async fn inspect(target: &str, json: bool, plain_http: bool) -> anyhow::Result<()> {
    let path = Path::new(target);
    if path.exists() {
        let (_, description) = read_wasm(path)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&description)?);
        } else {
            print_description(&description);
        }
        return Ok(());
    }
    let registry = Registry::new(target, plain_http)?;
    let resolved = registry.resolve().await?;
    // The world comes from the component itself: configs are written by
    // many tools, and only the binary is sure to be right.
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let file = tmp.path().join("layer.wasm");
    registry.pull_layer(&resolved.layer, &file).await?;
    let (_, description) = read_wasm(&file)?;
    let remote = Remote {
        reference: registry.reference().to_owned(),
        manifest: resolved.manifest_digest,
        layout: resolved.layer.layout.to_string(),
        wasm: description,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&remote)?);
    } else {
        println!("reference: {}", remote.reference);
        println!("manifest:  {}", remote.manifest);
        println!(
            "layout:    {} (config {})",
            remote.layout, resolved.config_media_type
        );
        print_description(&remote.wasm);
    }
    Ok(())
}

fn print_description(d: &describe::Description) {
    println!("kind:      {}", d.kind);
    println!("world:     {}", d.world);
    println!("size:      {} bytes", d.size);
    println!("digest:    {}", d.digest);
    println!("imports:");
    for i in &d.imports {
        println!("  {i}");
    }
    println!("exports:");
    for e in &d.exports {
        println!("  {e}");
    }
}

fn image(file: &Path, output: &Path, reference: &str) -> anyhow::Result<()> {
    let (bytes, _) = read_wasm(file)?;
    let name = file_name(file)?;
    // containerd names images in full (docker.io/library/app:latest).
    let reference = Registry::new(reference, false)?.reference().to_owned();
    let in_image = format!("/{name}");
    let spec = wasmpod_oci::ImageSpec {
        reference: reference.clone(),
        architecture: wasmpod_oci::host_architecture().to_owned(),
        env: Vec::new(),
        cmd: vec![in_image.clone()],
        files: vec![wasmpod_oci::ImageFile {
            path: in_image,
            mode: 0o644,
            bytes,
        }],
    };
    let cannot = || format!("cannot write {}", output.display());
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(cannot)?;
    wasmpod_oci::write_image_archive(&spec, std::io::BufWriter::new(tmp.as_file_mut()))
        .with_context(cannot)?;
    tmp.persist(output).with_context(cannot)?;
    println!("{} ({reference})", output.display());
    Ok(())
}
