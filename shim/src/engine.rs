//! The Wasmtime engine a shim process shares between all its containers,
//! and turning Wasm bytes into something ready to instantiate. A second
//! engine, Winch's, compiles a node's first start of a large wasi:http
//! server in a fraction of Cranelift's time; Cranelift's code then takes
//! over (see [`Origin::Baseline`]), compiled by a [`BackgroundCompile`].

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::watch;
use wasmpod_oci::{WasmKind, WasmSource};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{
    Config, Engine, ExternType, InstancePre, Linker, Module, Precompiled, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::cache::{self, CodeCache, Lookup};
use crate::epochs::Epochs;
use crate::http_grants::OutgoingHttp;
use crate::limits::MemoryLimit;
use crate::syscalls::Violation;

/// Why a program could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine configuration was refused (a bug, or an unsupported CPU).
    #[error("cannot configure Wasmtime")]
    Config(#[source] wasmtime::Error),
    /// The bytes are not valid Wasm (truncated, corrupt, unsupported feature).
    #[error("{origin} is not a valid WebAssembly {kind}")]
    Compile {
        /// Where the bytes came from.
        origin: String,
        /// Module or component.
        kind: WasmKind,
        /// Wasmtime's explanation.
        #[source]
        source: wasmtime::Error,
    },
    /// The program needs imports the shim does not provide, or lacks the
    /// entry point of a command.
    #[error(
        "{origin} cannot run here: wasmpod runs WASI preview 2 command components (wasi:cli/run), wasi:http/proxy components (wasi:http/incoming-handler), WASI preview 1 modules (_start, or a default export after _initialize), and a function without parameters named after `#` in the entrypoint (/app.wasm#name)"
    )]
    Unsupported {
        /// Where the bytes came from.
        origin: String,
        /// What was missing or extra.
        #[source]
        source: wasmtime::Error,
    },
}

/// Store data that carries its container's memory limit.
pub trait Limited {
    /// The limit, checked on every grow of a memory or table.
    fn limit(&mut self) -> &mut MemoryLimit;
}

impl Limited for ComponentState {
    fn limit(&mut self) -> &mut MemoryLimit {
        &mut self.limit
    }
}

impl Limited for ModuleState {
    fn limit(&mut self) -> &mut MemoryLimit {
        &mut self.limit
    }
}

/// Store data for a component guest (a command, or one HTTP request).
pub struct ComponentState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outgoing: OutgoingHttp,
    table: ResourceTable,
    /// The container's memory limit, checked on every grow.
    pub limit: MemoryLimit,
}

impl ComponentState {
    /// Wraps a built WASI context; `outgoing` decides where the guest may
    /// send HTTP requests.
    pub fn new(wasi: WasiCtx, outgoing: OutgoingHttp, limit: MemoryLimit) -> Self {
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            outgoing,
            table: ResourceTable::new(),
            limit,
        }
    }
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

/// Store data for a preview 1 module guest.
pub struct ModuleState {
    wasi: WasiP1Ctx,
    /// The container's memory limit, checked on every grow.
    pub limit: MemoryLimit,
}

impl ModuleState {
    /// Wraps a built preview 1 context.
    pub fn new(wasi: WasiP1Ctx, limit: MemoryLimit) -> Self {
        Self { wasi, limit }
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A program linked against WASI and ready to instantiate, many times if
/// need be.
#[derive(Clone)]
pub enum Program {
    /// A preview 1 module, and the exports that run it, called in turn.
    Module {
        /// The linked module.
        pre: InstancePre<ModuleState>,
        /// Export names, e.g. `["_start"]` or `["_initialize", ""]`.
        calls: Vec<String>,
    },
    /// A preview 2 command component.
    Component(CommandPre<ComponentState>),
    /// A component run by calling one of its exported functions.
    ComponentFunc {
        /// The linked component.
        pre: wasmtime::component::InstancePre<ComponentState>,
        /// The top-level function export to call; it takes no parameters.
        name: String,
    },
    /// A wasi:http/proxy component: served, one instance per request.
    Http(Proxy),
}

/// A wasi:http/proxy component's code for the next request: on a node's
/// first start of a large server, baseline code until the optimised code
/// is compiled, then that.
#[derive(Clone)]
pub struct Proxy(watch::Receiver<ProxyPre<ComponentState>>);

impl Proxy {
    /// Code that is never replaced.
    fn fixed(pre: ProxyPre<ComponentState>) -> Self {
        Self(watch::channel(pre).1)
    }

    /// The code the next request runs.
    pub fn current(&self) -> ProxyPre<ComponentState> {
        self.0.borrow().clone()
    }
}

/// Compiled code of either kind.
enum Code {
    Module(Module),
    Component(Component),
}

/// How a program was obtained, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from the node cache.
    Cached,
    /// Compiled now (and stored, if the cache is writable).
    Compiled,
    /// Compiled now by the baseline compiler, to answer sooner; the
    /// optimised code is being compiled in the background, stored in the
    /// cache, and serves the requests after it is ready.
    Baseline,
}

/// Compiles a server's optimised code into the cache away from the
/// shim's own memory (see `compiler`); returns once the compile has ended.
pub trait BackgroundCompile: Send + Sync {
    /// Compiles `source` into the cache.
    fn compile(&self, source: &WasmSource) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Wasm at least this large that serves wasi:http starts on baseline code
/// when the node has not compiled it yet: Cranelift takes 6 to 10 s for the
/// 18 MB Python component on two cores, Winch under 3 s.
pub const BASELINE_FROM_BYTES: usize = 1 << 20;

/// An engine (one compiler's settings) and its WASI linkers.
struct Tier {
    engine: Engine,
    // Built on first use: a pod of components never pages in the preview 1
    // registration code, and the reverse.
    modules: OnceLock<Linker<ModuleState>>,
    components: OnceLock<ComponentLinker<ComponentState>>,
}

impl Tier {
    fn new(config: &Config) -> Result<Self, EngineError> {
        Ok(Self {
            engine: Engine::new(config).map_err(EngineError::Config)?,
            modules: OnceLock::new(),
            components: OnceLock::new(),
        })
    }

    fn module_linker(&self) -> Result<&Linker<ModuleState>, EngineError> {
        if let Some(linker) = self.modules.get() {
            return Ok(linker);
        }
        let mut linker = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut ModuleState| &mut s.wasi)
            .map_err(EngineError::Config)?;
        // wasmtime-wasi traps on `proc_exit` statuses of 126 and above; a
        // native process may exit with any status, and so may a guest.
        linker.allow_shadowing(true);
        linker
            .func_wrap(
                "wasi_snapshot_preview1",
                "proc_exit",
                |status: i32| -> wasmtime::Result<()> {
                    Err(wasmtime_wasi::I32Exit(status).into())
                },
            )
            .map_err(EngineError::Config)?;
        linker.allow_shadowing(false);
        // Two first guests may race here; either linker is as good.
        Ok(self.modules.get_or_init(|| linker))
    }

    fn component_linker(&self) -> Result<&ComponentLinker<ComponentState>, EngineError> {
        if let Some(linker) = self.components.get() {
            return Ok(linker);
        }
        let mut linker = ComponentLinker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(EngineError::Config)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(EngineError::Config)?;
        Ok(self.components.get_or_init(|| linker))
    }

    fn link(&self, code: Code, origin: &str, export: Option<&str>) -> Result<Program, EngineError> {
        let unsupported = |source| EngineError::Unsupported {
            origin: origin.to_owned(),
            source,
        };
        match code {
            Code::Module(module) => {
                let calls = module_calls(&module, export).map_err(unsupported)?;
                let pre = self
                    .module_linker()?
                    .instantiate_pre(&module)
                    .map_err(unsupported)?;
                Ok(Program::Module { pre, calls })
            }
            Code::Component(component) => {
                let pre = self
                    .component_linker()?
                    .instantiate_pre(&component)
                    .map_err(unsupported)?;
                if let Some(name) = export {
                    check_component_func(&self.engine, &component, name).map_err(unsupported)?;
                    let name = name.to_owned();
                    return Ok(Program::ComponentFunc { pre, name });
                }
                // A command if it exports wasi:cli/run, else a proxy; the
                // error names what a command lacks, the commoner mistake.
                match CommandPre::new(pre.clone()) {
                    Ok(command) => Ok(Program::Component(command)),
                    Err(not_command) => match ProxyPre::new(pre) {
                        Ok(proxy) => Ok(Program::Http(Proxy::fixed(proxy))),
                        Err(_) => Err(unsupported(not_command)),
                    },
                }
            }
        }
    }
}

/// The shim's engines, their WASI linkers and the code cache.
pub struct WasmEngine {
    /// Cranelift, optimising: the code every cached program runs.
    optimised: Arc<Tier>,
    /// Winch, built on first use; `None` if Wasmtime refused it.
    baseline: OnceLock<Option<Arc<Tier>>>,
    cache: Arc<CodeCache>,
    /// Where optimised code is compiled after a baseline start; without
    /// one, on a thread of the shim.
    background: Option<Arc<dyn BackgroundCompile>>,
}

/// The settings both engines share.
fn config() -> Config {
    let mut config = Config::new();
    // Epochs let a kill stop a guest that never returns to the host;
    // nothing advances the epoch except a kill, so running costs nothing.
    config
        .epoch_interruption(true)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64))
        // `.eh_frame` serves only native unwinders (gdb, a profiler's
        // stack walk); trap backtraces do not use it. Without it every
        // container start skips registering it with libgcc, and the
        // compiled code is 3% smaller.
        .native_unwind_info(false)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    config
}

impl WasmEngine {
    /// Builds the engine. `cache_dir` is the node-wide compiled-code cache.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Result<Self, EngineError> {
        let optimised = Tier::new(&config())?;
        let cache = CodeCache::new(cache_dir, &optimised.engine);
        Ok(Self {
            optimised: Arc::new(optimised),
            baseline: OnceLock::new(),
            cache: Arc::new(cache),
            background: None,
        })
    }

    /// Compiles the optimised code of servers started on baseline code
    /// with `background`.
    pub fn with_background(mut self, background: Arc<dyn BackgroundCompile>) -> Self {
        self.background = Some(background);
        self
    }

    /// The engine of cached code.
    pub fn engine(&self) -> &Engine {
        &self.optimised.engine
    }

    /// The epochs of every engine built so far, which a guest's kill ticks.
    pub fn epochs(&self) -> Epochs {
        let mut engines = vec![self.optimised.engine.clone()];
        if let Some(Some(baseline)) = self.baseline.get() {
            engines.push(baseline.engine.clone());
        }
        Epochs::of(engines)
    }

    /// The node-wide code cache.
    pub fn cache(&self) -> &CodeCache {
        &self.cache
    }

    fn baseline(&self) -> Option<&Arc<Tier>> {
        self.baseline
            .get_or_init(|| {
                let mut config = config();
                config.strategy(wasmtime::Strategy::Winch);
                Tier::new(&config)
                    .inspect_err(|e| {
                        tracing::warn!(error = %wasmpod_oci::error_chain(e), "no baseline compiler: first starts compile optimised code");
                    })
                    .ok()
                    .map(Arc::new)
            })
            .as_ref()
    }

    /// Compiles `source` (or loads it from the cache) and links it against
    /// WASI, so that a bad program fails here, at create, and not at start.
    /// `export` names the function to run instead of the program's own
    /// entry point.
    pub fn prepare(
        &self,
        source: &WasmSource,
        export: Option<&str>,
    ) -> Result<(Program, Origin), EngineError> {
        if source.kind == WasmKind::Component
            && let Some(server) = self.serve_on_baseline(source, export)?
        {
            return Ok((server, Origin::Baseline));
        }
        let (code, origin) = self.load_or_compile(source)?;
        Ok((self.optimised.link(code, &source.origin, export)?, origin))
    }

    /// A large wasi:http server the node has not compiled yet, on code the
    /// baseline compiler made in a fraction of Cranelift's time, while its
    /// optimised code is compiled in the background (see [`tier_up`]).
    /// `None`: not such a program, or no baseline compiler.
    fn serve_on_baseline(
        &self,
        source: &WasmSource,
        export: Option<&str>,
    ) -> Result<Option<Program>, EngineError> {
        if export.is_some()
            || source.bytes.len() < BASELINE_FROM_BYTES
            || self.cache.has(&source.digest)
            || !serves_http(&source.bytes)
        {
            return Ok(None);
        }
        let Some(baseline) = self.baseline() else {
            return Ok(None);
        };
        let started = Instant::now();
        let component =
            Component::new(&baseline.engine, &source.bytes).map_err(|e| EngineError::Compile {
                origin: source.origin.clone(),
                kind: source.kind,
                source: e,
            })?;
        // Both an incoming handler and wasi:cli/run: a command, which must
        // not keep baseline code for its whole run.
        let Program::Http(proxy) =
            baseline.link(Code::Component(component), &source.origin, None)?
        else {
            return Ok(None);
        };
        tracing::info!(
            digest = %source.digest,
            bytes = source.bytes.len(),
            ms = started.elapsed().as_millis() as u64,
            "compiled by the baseline compiler; compiling optimised code in the background"
        );
        let (next, current) = watch::channel(proxy.current());
        tier_up(
            self.optimised.clone(),
            self.cache.clone(),
            self.background.clone(),
            source.clone(),
            next,
        );
        Ok(Some(Program::Http(Proxy(current))))
    }

    /// Loads the program whose Wasm has `digest` from the cache alone, so
    /// that a layer whose code is cached is never read. `None`: not cached.
    pub fn prepare_cached(
        &self,
        digest: &str,
        origin: &str,
        export: Option<&str>,
    ) -> Result<Option<Program>, EngineError> {
        let engine = &self.optimised.engine;
        let load = |path: &std::path::Path| match Engine::detect_precompiled_file(path)? {
            Some(Precompiled::Module) => cache::load_module(engine, path).map(Code::Module),
            Some(Precompiled::Component) => {
                cache::load_component(engine, path).map(Code::Component)
            }
            None => Err(wasmtime::format_err!("not a Wasmtime compiled artifact")),
        };
        match found(&self.cache, digest, self.cache.lookup(digest, load)) {
            Some(code) => self.optimised.link(code, origin, export).map(Some),
            None => Ok(None),
        }
    }

    /// Compiles `source` with Cranelift into the cache, unless a good entry
    /// is there already; `true` if it compiled. Processes compiling the
    /// same Wasm at once take turns on the entry's lock.
    pub fn compile_to_cache(&self, source: &WasmSource) -> Result<bool, EngineError> {
        let _turn = self.cache.lock(&source.digest);
        let (_, origin) = self.load_or_compile(source)?;
        Ok(origin == Origin::Compiled)
    }

    /// `source`'s optimised code: from the cache, else compiled and stored.
    fn load_or_compile(&self, source: &WasmSource) -> Result<(Code, Origin), EngineError> {
        let engine = &self.optimised.engine;
        Ok(match source.kind {
            WasmKind::Module => {
                let (module, origin) = self.compiled(
                    source,
                    |path| cache::load_module(engine, path),
                    || Module::new(engine, &source.bytes),
                    Module::serialize,
                )?;
                (Code::Module(module), origin)
            }
            WasmKind::Component => {
                let (component, origin) = self.compiled(
                    source,
                    |path| cache::load_component(engine, path),
                    || Component::new(engine, &source.bytes),
                    Component::serialize,
                )?;
                (Code::Component(component), origin)
            }
        })
    }

    fn compiled<T>(
        &self,
        source: &WasmSource,
        load: impl FnOnce(&std::path::Path) -> wasmtime::Result<T>,
        compile: impl FnOnce() -> wasmtime::Result<T>,
        serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
    ) -> Result<(T, Origin), EngineError> {
        if let Some(code) = found(
            &self.cache,
            &source.digest,
            self.cache.lookup(&source.digest, load),
        ) {
            return Ok((code, Origin::Cached));
        }
        Ok((
            compile_and_store(&self.cache, source, compile, serialize)?,
            Origin::Compiled,
        ))
    }
}

/// What a cache lookup gave, with corrupt entries logged and counted.
fn found<T>(cache: &CodeCache, digest: &str, lookup: Lookup<T>) -> Option<T> {
    match lookup {
        Lookup::Hit(code) => {
            tracing::debug!(digest, "loaded compiled code from the cache");
            Some(code)
        }
        Lookup::Miss => None,
        Lookup::Corrupt(reason) => {
            tracing::warn!(
                digest,
                %reason,
                corrupt_total = cache.stats.corrupt.load(std::sync::atomic::Ordering::Relaxed),
                "discarded a corrupt compiled-code cache entry; compiling again"
            );
            None
        }
    }
}

/// Compiles `source` with Cranelift and stores the code in the cache.
fn compile_and_store<T>(
    cache: &CodeCache,
    source: &WasmSource,
    compile: impl FnOnce() -> wasmtime::Result<T>,
    serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
) -> Result<T, EngineError> {
    let started = Instant::now();
    let code = compile().map_err(|e| EngineError::Compile {
        origin: source.origin.clone(),
        kind: source.kind,
        source: e,
    })?;
    tracing::info!(
        digest = %source.digest,
        kind = %source.kind,
        bytes = source.bytes.len(),
        ms = started.elapsed().as_millis() as u64,
        "compiled"
    );
    match serialize(&code) {
        Ok(artifact) => {
            if let Err(e) = cache.store(&source.digest, &artifact) {
                tracing::warn!(error = %e, "compiled code not cached; the next start compiles again");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot serialize compiled code"),
    }
    Ok(code)
}

/// Has a server's optimised code compiled (by `background`, else on this
/// thread), loads it from the cache and hands it to `next`, whose later
/// requests then run it. Shims starting the same new server at once take
/// turns on the entry's lock: the first compiles, the others load what it
/// stored.
fn tier_up(
    optimised: Arc<Tier>,
    cache: Arc<CodeCache>,
    background: Option<Arc<dyn BackgroundCompile>>,
    source: WasmSource,
    next: watch::Sender<ProxyPre<ComponentState>>,
) {
    let digest = source.digest.clone();
    let work = move || -> Result<(), EngineError> {
        let started = Instant::now();
        if let Some(background) = &background
            && let Err(e) = background.compile(&source)
        {
            tracing::warn!(digest = %source.digest, error = %e, "the background compile failed; compiling in the shim");
        }
        // Held while a compile in the shim runs; a background compile has
        // released it, and what it stored loads now.
        let _turn = cache.lock(&source.digest);
        let engine = &optimised.engine;
        let load = |path: &std::path::Path| cache::load_component(engine, path);
        let component = match found(&cache, &source.digest, cache.lookup(&source.digest, load)) {
            Some(component) => component,
            None => compile_and_store(
                &cache,
                &source,
                || Component::new(engine, &source.bytes),
                Component::serialize,
            )?,
        };
        let Program::Http(proxy) =
            optimised.link(Code::Component(component), &source.origin, None)?
        else {
            return Ok(());
        };
        // The server may have ended meanwhile; the cache still has the code.
        let _ = next.send(proxy.current());
        tracing::info!(
            digest = %source.digest,
            ms = started.elapsed().as_millis() as u64,
            "optimised code ready: the next requests run it"
        );
        Ok(())
    };
    let spawned = std::thread::Builder::new()
        .name("tier-up".into())
        .spawn(move || {
            if let Err(e) = work() {
                tracing::warn!(error = %wasmpod_oci::error_chain(&e), "no optimised code: the server keeps its baseline code");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(%digest, error = %e, "cannot start the optimised compile: the server keeps its baseline code");
    }
}

/// Whether a component exports wasi:http's incoming handler and not
/// wasi:cli/run: a server, told by its export names without compiling it.
fn serves_http(bytes: &[u8]) -> bool {
    let (mut handler, mut command, mut depth) = (false, false, 0u32);
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(
                wasmparser::Payload::ModuleSection { .. }
                | wasmparser::Payload::ComponentSection { .. },
            ) => depth += 1,
            Ok(wasmparser::Payload::End(_)) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => break,
            },
            Ok(wasmparser::Payload::ComponentExportSection(exports)) if depth == 0 => {
                for export in exports.into_iter().flatten() {
                    let name = export.name.name;
                    handler |= name.starts_with("wasi:http/incoming-handler@");
                    command |= name.starts_with("wasi:cli/run@");
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    handler && !command
}

/// The exports that run a module, in turn, as `wasmtime run` runs it: the
/// named export, else the default export (`""`), else `_start`; a module
/// that exports `_initialize` (a WASI reactor) has it called first.
fn module_calls(module: &Module, export: Option<&str>) -> wasmtime::Result<Vec<String>> {
    let func = |name: &str| match module.get_export(name) {
        Some(ExternType::Func(ty)) => Some(ty),
        _ => None,
    };
    let entry = match export {
        Some(name) => name,
        None if func("").is_some() => "",
        None if func("_start").is_some() => "_start",
        None => wasmtime::bail!(
            "the module exports neither `_start` nor a default export (is it a library? name the function to run after `#` in the entrypoint)"
        ),
    };
    match func(entry) {
        None => wasmtime::bail!("the module exports no function `{entry}`"),
        Some(ty) if ty.params().len() > 0 => wasmtime::bail!(
            "the module's export `{entry}` takes parameters; only a function without parameters can be run"
        ),
        Some(_) => {}
    }
    let initialize = entry != "_initialize" && entry != "_start" && func("_initialize").is_some();
    Ok(initialize
        .then(|| "_initialize".to_owned())
        .into_iter()
        .chain([entry.to_owned()])
        .collect())
}

/// Refuses, at create, a component export that is not a function without
/// parameters.
fn check_component_func(
    engine: &Engine,
    component: &Component,
    name: &str,
) -> wasmtime::Result<()> {
    match component
        .component_type()
        .get_export(engine, name)
        .map(|e| e.ty)
    {
        Some(ComponentItem::ComponentFunc(ty)) if ty.params().len() == 0 => Ok(()),
        Some(ComponentItem::ComponentFunc(_)) => wasmtime::bail!(
            "the component's export `{name}` takes parameters; only a function without parameters can be run"
        ),
        Some(_) => wasmtime::bail!("the component's export `{name}` is not a function"),
        None => wasmtime::bail!("the component exports no function `{name}`"),
    }
}

/// A store for one run of a guest (or one HTTP request): its memory limit
/// checked on every grow, and trapped at the next epoch tick once it is
/// killed by a signal for which `stops` is true, or once a thread of the
/// guest made a forbidden system call.
pub(crate) fn guest_store<T: Limited + 'static>(
    engine: &Engine,
    state: T,
    kill: watch::Receiver<i32>,
    violation: Arc<Violation>,
    stops: impl Fn(i32) -> bool + Send + Sync + 'static,
) -> Store<T> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| s.limit());
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if stops(*kill.borrow()) || violation.syscall().is_some() {
            Err(Trap::Interrupt.into())
        } else {
            Ok(UpdateDeadline::Continue(1))
        }
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{CodeSection, ExportKind, ExportSection, Function, FunctionSection};

    /// A module whose exports are functions that do nothing; each takes as
    /// many i32 parameters as given.
    fn module(engine: &Engine, exports: &[(&str, usize)]) -> Module {
        let mut types = wasm_encoder::TypeSection::new();
        let mut functions = FunctionSection::new();
        let mut code = CodeSection::new();
        let mut names = ExportSection::new();
        for (index, &(name, params)) in (0u32..).zip(exports) {
            types
                .ty()
                .function(vec![wasm_encoder::ValType::I32; params], []);
            functions.function(index);
            let mut body = Function::new([]);
            body.instructions().end();
            code.function(&body);
            names.export(name, ExportKind::Func, index);
        }
        let mut bytes = wasm_encoder::Module::new();
        bytes
            .section(&types)
            .section(&functions)
            .section(&names)
            .section(&code);
        Module::new(engine, bytes.finish()).expect("a valid module")
    }

    /// Exports an empty instance from `component` under each of `names`.
    fn export_instances(component: &mut wasm_encoder::Component, names: &[&str]) {
        use wasm_encoder::{ComponentExportKind, ComponentExportSection, ComponentInstanceSection};
        let mut instances = ComponentInstanceSection::new();
        let mut exports = ComponentExportSection::new();
        for (index, name) in names.iter().enumerate() {
            instances.export_items::<&str, _>([]);
            exports.export(*name, ComponentExportKind::Instance, index as u32, None);
        }
        component.section(&instances).section(&exports);
    }

    fn component(top: &[&str], nested: &[&str]) -> Vec<u8> {
        let mut inner = wasm_encoder::Component::new();
        export_instances(&mut inner, nested);
        let mut outer = wasm_encoder::Component::new();
        outer.section(&wasm_encoder::NestedComponentSection(&inner));
        export_instances(&mut outer, top);
        outer.finish()
    }

    #[test]
    fn servers_are_told_by_their_exports_before_any_compile() {
        const HANDLER: &str = "wasi:http/incoming-handler@0.2.3";
        const RUN: &str = "wasi:cli/run@0.2.3";
        assert!(serves_http(&component(&[HANDLER], &[])), "a proxy");
        assert!(
            !serves_http(&component(&[HANDLER, RUN], &[])),
            "a command that also handles requests runs to its end"
        );
        assert!(!serves_http(&component(&[RUN], &[])), "a command");
        assert!(
            !serves_http(&component(&[], &[HANDLER])),
            "only the top level's exports count"
        );
        let mut cut = component(&[HANDLER], &[]);
        cut.truncate(cut.len() - 3);
        assert!(!serves_http(&cut), "a cut component");
        assert!(!serves_http(b"\0asm\x01\0\0\0"), "a core module");
    }

    #[test]
    fn modules_are_entered_as_wasmtime_run_enters_them() {
        let engine = Engine::default();
        let calls = |exports: &[(&str, usize)], export: Option<&str>| {
            module_calls(&module(&engine, exports), export).map_err(|e| e.to_string())
        };
        let ok = |names: &[&str]| Ok(names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        assert_eq!(calls(&[("_start", 0)], None), ok(&["_start"]));
        assert_eq!(
            calls(&[("_initialize", 0), ("", 0)], None),
            ok(&["_initialize", ""])
        );
        // The default export comes before `_start`, as in `wasmtime run`.
        assert_eq!(calls(&[("_start", 0), ("", 0)], None), ok(&[""]));
        assert_eq!(
            calls(&[("_initialize", 0), ("run", 0)], Some("run")),
            ok(&["_initialize", "run"])
        );
        assert_eq!(
            calls(&[("_start", 0), ("run", 0)], Some("run")),
            ok(&["run"])
        );
        for (exports, export, error) in [
            (
                &[("_initialize", 0)][..],
                None,
                "exports neither `_start` nor a default export",
            ),
            (
                &[("_start", 0)],
                Some("nosuch"),
                "exports no function `nosuch`",
            ),
            (&[("add", 2)], Some("add"), "export `add` takes parameters"),
        ] {
            let refused = calls(exports, export).expect_err("refused");
            assert!(refused.contains(error), "{exports:?} {export:?}: {refused}");
        }
    }
}
