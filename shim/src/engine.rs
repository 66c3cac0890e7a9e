//! The one Wasmtime engine a shim process shares between all its containers,
//! and turning Wasm bytes into something ready to instantiate.

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
    Http(ProxyPre<ComponentState>),
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
}

/// The shim's engine, its WASI linkers and its code cache.
pub struct WasmEngine {
    engine: Engine,
    cache: CodeCache,
    // Built on first use: a pod of components never pages in the preview 1
    // registration code, and the reverse.
    modules: OnceLock<Linker<ModuleState>>,
    components: OnceLock<ComponentLinker<ComponentState>>,
}

impl WasmEngine {
    /// Builds the engine. `cache_dir` is the node-wide compiled-code cache.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Result<Self, EngineError> {
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
        let engine = Engine::new(&config).map_err(EngineError::Config)?;
        let cache = CodeCache::new(cache_dir, &engine);
        Ok(Self {
            engine,
            cache,
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

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The node-wide code cache.
    pub fn cache(&self) -> &CodeCache {
        &self.cache
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
        let (code, origin) = match source.kind {
            WasmKind::Module => {
                let (module, origin) = self.compiled(
                    source,
                    |path| cache::load_module(&self.engine, path),
                    || Module::new(&self.engine, &source.bytes),
                    Module::serialize,
                )?;
                (Code::Module(module), origin)
            }
            WasmKind::Component => {
                let (component, origin) = self.compiled(
                    source,
                    |path| cache::load_component(&self.engine, path),
                    || Component::new(&self.engine, &source.bytes),
                    Component::serialize,
                )?;
                (Code::Component(component), origin)
            }
        };
        Ok((self.link(code, &source.origin, export)?, origin))
    }

    /// Loads the program whose Wasm has `digest` from the cache alone, so
    /// that a layer whose code is cached is never read. `None`: not cached.
    pub fn prepare_cached(
        &self,
        digest: &str,
        origin: &str,
        export: Option<&str>,
    ) -> Result<Option<Program>, EngineError> {
        let load = |path: &std::path::Path| match Engine::detect_precompiled_file(path)? {
            Some(Precompiled::Module) => cache::load_module(&self.engine, path).map(Code::Module),
            Some(Precompiled::Component) => {
                cache::load_component(&self.engine, path).map(Code::Component)
            }
            None => Err(wasmtime::format_err!("not a Wasmtime compiled artifact")),
        };
        match self.found(digest, self.cache.lookup(digest, load)) {
            Some(code) => self.link(code, origin, export).map(Some),
            None => Ok(None),
        }
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
                        Ok(proxy) => Ok(Program::Http(proxy)),
                        Err(_) => Err(unsupported(not_command)),
                    },
                }
            }
        }
    }

    /// What a cache lookup gave, with corrupt entries logged and counted.
    fn found<T>(&self, digest: &str, lookup: Lookup<T>) -> Option<T> {
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
                    corrupt_total = self.cache.stats.corrupt.load(std::sync::atomic::Ordering::Relaxed),
                    "discarded a corrupt compiled-code cache entry; compiling again"
                );
                None
            }
        }
    }

    fn compiled<T>(
        &self,
        source: &WasmSource,
        load: impl FnOnce(&std::path::Path) -> wasmtime::Result<T>,
        compile: impl FnOnce() -> wasmtime::Result<T>,
        serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
    ) -> Result<(T, Origin), EngineError> {
        if let Some(code) = self.found(&source.digest, self.cache.lookup(&source.digest, load)) {
            return Ok((code, Origin::Cached));
        }
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
                if let Err(e) = self.cache.store(&source.digest, &artifact) {
                    tracing::warn!(error = %e, "compiled code not cached; the next start compiles again");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize compiled code"),
        }
        Ok((code, Origin::Compiled))
    }
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
