//! The glue `export_plugin!` expands to. Not for direct use.
//!
//! Every call from the host into plugin code passes through [`guard`]: a panic becomes a
//! [`ErrorKind::Panicked`] error carrying the panic message and location, instead of unwinding
//! into the host (which `abi_stable` would turn into a process abort).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use abi_stable::{
    library::{CheckTypeLayout, LibHeader, RootModuleResult},
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec},
};

use crate::abi::*;
use crate::sdk::{parse_config, Capture, Describe, Processor, StageContext, Storage};

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Inside a call from the host (a panic here becomes that call's error).
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
    static AUDIO_CALL: Cell<bool> = const { Cell::new(false) };
    static AUDIO_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

static HOOK: Once = Once::new();

/// A panic on a thread the plugin started itself (not inside a call from the host): kept here
/// and returned as the error of the library's next call, so the host meets it with the stage's
/// policy. `PENDING` keeps the check on every call to one atomic load.
static THREAD_PANICS: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
static PENDING: AtomicBool = AtomicBool::new(false);

/// The instances (their addresses) inside a call from the host right now. A thread panicking
/// while exactly one is in a call is taken to be that instance's (it is typically waiting for
/// it); otherwise the panic goes to the library's next call, whichever instance makes it.
/// Each slot has a cache line of its own, and each thread starts looking at a slot of its own,
/// so that stage threads calling the same library do not take lines from each other per call.
static ACTIVE: [Slot; 16] = [const { Slot(AtomicUsize::new(0)) }; 16];

#[repr(align(64))]
struct Slot(AtomicUsize);

static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static HOME: usize = NEXT_HOME.fetch_add(1, Ordering::Relaxed) % ACTIVE.len();
}

fn enter(instance: usize) -> Option<usize> {
    (instance != 0).then_some(())?;
    let home = HOME.try_with(|h| *h).unwrap_or(0);
    (0..ACTIVE.len())
        .map(|k| (home + k) % ACTIVE.len())
        .find(|&i| {
            ACTIVE[i]
                .0
                .compare_exchange(0, instance, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
}

fn owner_of_orphan_panic() -> usize {
    let mut active = ACTIVE
        .iter()
        .map(|a| a.0.load(Ordering::Acquire))
        .filter(|&a| a != 0);
    match (active.next(), active.next()) {
        (Some(one), None) => one,
        _ => 0,
    }
}

/// The panics of the plugin's own threads that belong to `instance` (or to nobody in
/// particular), taken.
fn thread_panics_of(instance: usize) -> Option<String> {
    // A plain read first: every call of every instance of the library passes here, and a
    // swap would take the line from the other threads each time.
    if !PENDING.load(Ordering::Acquire) || !PENDING.swap(false, Ordering::AcqRel) {
        return None;
    }
    let mut list = THREAD_PANICS.lock().unwrap_or_else(|e| e.into_inner());
    let (mine, others): (Vec<_>, Vec<_>) = list
        .drain(..)
        .partition(|(owner, _)| *owner == 0 || *owner == instance);
    *list = others;
    if !list.is_empty() {
        PENDING.store(true, Ordering::Release);
    }
    let texts: Vec<String> = mine.into_iter().map(|(_, t)| t).collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

/// Replace this library's panic hook (each cdylib has its own copy of std) with one that records
/// the message and location for [`guard`] instead of printing to the host's stderr.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let msg = payload_text(info.payload());
            let text = match info.location() {
                Some(loc) => format!("{msg} (at {}:{}:{})", loc.file(), loc.line(), loc.column()),
                None => msg,
            };
            if IN_CALL.with(Cell::get) {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
                return;
            }
            let thread = std::thread::current().name().map(str::to_string);
            let thread = thread.map_or("a thread".to_string(), |n| format!("thread '{n}'"));
            let owner = owner_of_orphan_panic();
            let mut list = THREAD_PANICS.lock().unwrap_or_else(|e| e.into_inner());
            list.push((owner, format!("{thread} of the plugin panicked: {text}")));
            PENDING.store(true, Ordering::Release);
        }));
    });
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Run plugin code, turning a panic into an error.
pub fn guard<T>(f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    guard_in(0, f)
}

/// [`guard`] for a call into one instance (its address): a panic on a thread of the plugin's own
/// that belongs to it is returned as this call's error, before the call is made.
pub fn guard_in<T>(
    instance: usize,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> RResult<T, PluginError> {
    if let Some(text) = thread_panics_of(instance) {
        return RResult::RErr(PluginError::new(ErrorKind::Panicked, text));
    }
    let slot = enter(instance);
    let outer = IN_CALL.with(|c| c.replace(true));
    let caught = panic::catch_unwind(AssertUnwindSafe(f));
    IN_CALL.with(|c| c.set(outer));
    if let Some(i) = slot {
        ACTIVE[i].0.store(0, Ordering::Release);
    }
    match caught {
        Ok(r) => r.into(),
        Err(payload) => {
            let text = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| payload_text(&*payload));
            RResult::RErr(PluginError::new(
                ErrorKind::Panicked,
                format!("panicked: {text}"),
            ))
        }
    }
}

/// Like [`guard`], and in debug builds also fails the call if the plugin allocated during it.
/// Used for the calls on the audio path (`read`, `process`, `finish`, `write`).
pub fn guard_audio<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> RResult<T, PluginError> {
    guard_audio_in(what, 0, f)
}

/// [`guard_audio`] for a call into one instance (its address), as [`guard_in`].
pub fn guard_audio_in<T>(
    what: &str,
    instance: usize,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> RResult<T, PluginError> {
    if !cfg!(debug_assertions) {
        return guard_in(instance, f);
    }
    AUDIO_ALLOCS.with(|c| c.set(0));
    AUDIO_CALL.with(|c| c.set(true));
    let r = guard_in(instance, f);
    AUDIO_CALL.with(|c| c.set(false));
    let allocs = AUDIO_ALLOCS.with(|c| c.get());
    match r {
        RResult::ROk(_) if allocs > 0 => RResult::RErr(PluginError::other(format!(
            "allocated {allocs} time(s) inside {what}(); allocate in new() instead \
             (this check runs in debug builds of the plugin)"
        ))),
        r => r,
    }
}

/// The global allocator `export_plugin!` installs in debug builds: the system allocator, counting
/// allocations made on the current thread while an audio-path call is running.
pub struct CheckingAllocator;

unsafe impl GlobalAlloc for CheckingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note_alloc() {
    // `try_with` fails only while this thread's locals are being destroyed (a thread shutting
    // down): no audio-path call runs then, so there is nothing to count.
    if !AUDIO_CALL.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    if AUDIO_ALLOCS.try_with(|c| c.set(c.get() + 1)).is_err() {
        // The thread is shutting down after all: nothing to count.
    }
}

type LayoutFn = fn(&str, &StageContext<'_>) -> Result<Vec<OutputPort>, PluginError>;
type NewFn<T> = fn(&str, &StageContext<'_>) -> Result<T, PluginError>;

/// One plugin of a library: what the root module functions dispatch on.
pub struct Entry {
    pub name: &'static str,
    manifest: fn() -> PluginManifest,
    layout: LayoutFn,
    new_capture: Option<NewFn<CaptureBox>>,
    new_processor: Option<NewFn<ProcessorBox>>,
    new_storage: Option<NewFn<StorageBox>>,
    #[cfg(tapeline_api_next)]
    tags: &'static str,
}

// `into`: the test fixture that proves layout drift is caught builds this with a wider `max`.
#[allow(clippy::useless_conversion)]
fn manifest_of<D: Describe>(kind: PluginKind, inputs: (u32, u32)) -> PluginManifest {
    let schema = schemars::schema_for!(D::Config);
    PluginManifest {
        name: D::NAME.into(),
        kind,
        version: RString::new(),
        description: D::DESCRIPTION.into(),
        inputs: PortCount {
            min: inputs.0,
            max: inputs.1.into(),
        },
        outputs: D::OUTPUTS.into(),
        channels: PortCount {
            min: D::CHANNELS.0,
            max: D::CHANNELS.1.into(),
        },
        sample_rates: D::SAMPLE_RATES.iter().copied().collect(),
        config_schema: serde_json::to_string(&schema).unwrap_or_default().into(),
        live: D::LIVE,
    }
}

impl Entry {
    pub const fn capture<C: Capture>() -> Entry {
        Entry {
            name: C::NAME,
            #[cfg(tapeline_api_next)]
            tags: C::TAGS,
            manifest: || manifest_of::<C>(PluginKind::Capture, (0, 0)),
            layout: |cfg, ctx| C::outputs(&parse_config(cfg)?, ctx),
            new_capture: Some(|cfg, ctx| {
                let inner = C::new(parse_config(cfg)?, ctx)?;
                Ok(CaptureObj_TO::from_value(CaptureAdapter(inner), TD_Opaque))
            }),
            new_processor: None,
            new_storage: None,
        }
    }

    pub const fn process<P: Processor>() -> Entry {
        Entry {
            name: P::NAME,
            #[cfg(tapeline_api_next)]
            tags: P::TAGS,
            manifest: || manifest_of::<P>(PluginKind::Process, P::INPUTS),
            layout: |cfg, ctx| P::outputs(&parse_config(cfg)?, ctx),
            new_capture: None,
            new_processor: Some(|cfg, ctx| {
                let inner = P::new(parse_config(cfg)?, ctx)?;
                Ok(ProcessorObj_TO::from_value(
                    ProcessorAdapter(inner),
                    TD_Opaque,
                ))
            }),
            new_storage: None,
        }
    }

    pub const fn storage<S: Storage>() -> Entry {
        Entry {
            name: S::NAME,
            #[cfg(tapeline_api_next)]
            tags: S::TAGS,
            manifest: || manifest_of::<S>(PluginKind::Storage, (1, 1)),
            layout: |cfg, ctx| S::check(&parse_config(cfg)?, ctx).map(|()| Vec::new()),
            new_capture: None,
            new_processor: None,
            new_storage: Some(|cfg, ctx| {
                let inner = S::new(parse_config(cfg)?, ctx)?;
                Ok(StorageObj_TO::from_value(StorageAdapter(inner), TD_Opaque))
            }),
        }
    }
}

fn find<'e>(entries: &'e [Entry], name: &str) -> Result<&'e Entry, PluginError> {
    entries
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| PluginError::other(format!("this library has no plugin named `{name}`")))
}

fn wrong_kind(name: &str, kind: PluginKind) -> PluginError {
    PluginError::other(format!("plugin `{name}` is not a {kind} plugin"))
}

pub fn manifests(entries: &[Entry], version: &str) -> RVec<PluginManifest> {
    entries
        .iter()
        .filter_map(|e| match guard(|| Ok((e.manifest)())) {
            RResult::ROk(mut m) => {
                m.version = version.into();
                Some(m)
            }
            RResult::RErr(_) => None,
        })
        .collect()
}

pub fn layout(
    entries: &[Entry],
    name: RStr<'_>,
    config: RStr<'_>,
    ctx: ContextRef<'_>,
) -> RResult<RVec<OutputPort>, PluginError> {
    guard(|| {
        let ctx = StageContext::from_host(ctx)?;
        let e = find(entries, name.as_str())?;
        (e.layout)(config.as_str(), &ctx).map(RVec::from)
    })
}

pub fn new_capture(
    entries: &[Entry],
    name: RStr<'_>,
    config: RStr<'_>,
    ctx: ContextRef<'_>,
) -> RResult<CaptureBox, PluginError> {
    guard(|| {
        let ctx = StageContext::from_host(ctx)?;
        let e = find(entries, name.as_str())?;
        let f = e
            .new_capture
            .ok_or_else(|| wrong_kind(e.name, PluginKind::Capture))?;
        f(config.as_str(), &ctx)
    })
}

pub fn new_processor(
    entries: &[Entry],
    name: RStr<'_>,
    config: RStr<'_>,
    ctx: ContextRef<'_>,
) -> RResult<ProcessorBox, PluginError> {
    guard(|| {
        let ctx = StageContext::from_host(ctx)?;
        let e = find(entries, name.as_str())?;
        let f = e
            .new_processor
            .ok_or_else(|| wrong_kind(e.name, PluginKind::Process))?;
        f(config.as_str(), &ctx)
    })
}

pub fn new_storage(
    entries: &[Entry],
    name: RStr<'_>,
    config: RStr<'_>,
    ctx: ContextRef<'_>,
) -> RResult<StorageBox, PluginError> {
    guard(|| {
        let ctx = StageContext::from_host(ctx)?;
        let e = find(entries, name.as_str())?;
        let f = e
            .new_storage
            .ok_or_else(|| wrong_kind(e.name, PluginKind::Storage))?;
        f(config.as_str(), &ctx)
    })
}

/// Build the root module value from the generated functions.
pub fn library(
    manifests: extern "C" fn() -> RVec<PluginManifest>,
    layout: extern "C" fn(
        RStr<'_>,
        RStr<'_>,
        ContextRef<'_>,
    ) -> RResult<RVec<OutputPort>, PluginError>,
    new_capture: extern "C" fn(
        RStr<'_>,
        RStr<'_>,
        ContextRef<'_>,
    ) -> RResult<CaptureBox, PluginError>,
    new_processor: extern "C" fn(
        RStr<'_>,
        RStr<'_>,
        ContextRef<'_>,
    ) -> RResult<ProcessorBox, PluginError>,
    new_storage: extern "C" fn(
        RStr<'_>,
        RStr<'_>,
        ContextRef<'_>,
    ) -> RResult<StorageBox, PluginError>,
    extension: extern "C" fn(RStr<'_>, u32) -> ROption<RawExtension>,
    entries: &'static [Entry],
) -> PluginLibraryRef {
    install_panic_hook();
    LIBRARY.get_or_init(|| entries);
    PluginLibrary {
        manifests,
        layout,
        new_capture,
        new_processor,
        new_storage,
        extension,
    }
    .leak_into_prefix()
}

/// The library's plugins, for its extensions (set when the host loads the library).
static LIBRARY: std::sync::OnceLock<&'static [Entry]> = std::sync::OnceLock::new();

/// A library's extension `name` at `version`. API 1.0 defines none for libraries; the
/// function is there so that later 1.x versions can (see `docs/abi.md`).
#[cfg_attr(not(tapeline_api_next), allow(unused_variables))]
pub fn library_extension(name: RStr<'_>, version: u32) -> ROption<RawExtension> {
    #[cfg(tapeline_api_next)]
    if name.as_str() == crate::next::MANIFEST_EXTENSION && version == 1 {
        const TABLE: &crate::next::ManifestV1 = &crate::next::ManifestV1 { tags: next_tags };
        return ROption::RSome(RawExtension::new(TABLE, std::ptr::null()));
    }
    ROption::RNone
}

#[cfg(tapeline_api_next)]
extern "C" fn next_tags(name: RStr<'_>) -> RString {
    let entries = LIBRARY.get().copied().unwrap_or_default();
    let tags = entries
        .iter()
        .find(|e| e.name == name.as_str())
        .map(|e| e.tags);
    tags.unwrap_or_default().into()
}

struct CaptureAdapter<C>(C);
struct ProcessorAdapter<P>(P);
struct StorageAdapter<S>(S);

/// The plugin inside an adapter, for the extensions every kind has.
trait Adapter: Sized {
    type Plugin: Describe;
    fn plugin(&self) -> &Self::Plugin;
}

impl<C: Capture> Adapter for CaptureAdapter<C> {
    type Plugin = C;
    fn plugin(&self) -> &C {
        &self.0
    }
}

impl<P: Processor> Adapter for ProcessorAdapter<P> {
    type Plugin = P;
    fn plugin(&self) -> &P {
        &self.0
    }
}

impl<S: Storage> Adapter for StorageAdapter<S> {
    type Plugin = S;
    fn plugin(&self) -> &S {
        &self.0
    }
}

/// An instance's extension `name` at `version`: `tapeline.stats` 1 when the plugin names
/// counters in [`Describe::STATS`].
fn instance_extension<A: Adapter>(me: &A, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
    if name.as_str() == STATS_EXTENSION && version == 1 && !A::Plugin::STATS.is_empty() {
        return ROption::RSome(RawExtension::new(
            StatsTable::<A>::TABLE,
            (me as *const A).cast(),
        ));
    }
    ROption::RNone
}

struct StatsTable<A>(std::marker::PhantomData<A>);

impl<A: Adapter> StatsTable<A> {
    const TABLE: &'static StatsV1 = &StatsV1 {
        names: stat_names::<A>,
        read: stat_read::<A>,
    };
}

extern "C" fn stat_names<A: Adapter>(_instance: *const c_void) -> RVec<RString> {
    A::Plugin::STATS.iter().map(|&n| RString::from(n)).collect()
}

extern "C" fn stat_read<A: Adapter>(instance: *const c_void, mut out: RSliceMut<'_, u64>) -> u32 {
    // SAFETY: `instance` is the adapter `instance_extension` handed out with this table; the
    // host calls this only while the instance lives, from the thread that owns it, between
    // its other calls.
    let me = unsafe { &*instance.cast::<A>() };
    let n = A::Plugin::STATS.len().min(out.len());
    let values = &mut out.as_mut_slice()[..n];
    match panic::catch_unwind(AssertUnwindSafe(|| me.plugin().stats(values))) {
        Ok(()) => n as u32,
        Err(_) => 0,
    }
}

impl<C: Capture> CaptureObj for CaptureAdapter<C> {
    fn start(&mut self) -> RResult<(), PluginError> {
        let me = self as *const Self as usize;
        guard_in(me, || self.0.start())
    }
    fn read<'a>(&mut self, out: &mut OutputBlock<'a>) -> RResult<ReadStatus, PluginError> {
        let me = self as *const Self as usize;
        guard_audio_in("read", me, || self.0.read(out))
    }
    fn stop(&mut self) -> RResult<(), PluginError> {
        let me = self as *const Self as usize;
        guard_in(me, || self.0.stop())
    }
    fn length_frames(&self) -> ROption<u64> {
        match guard(|| Ok(self.0.length_frames())) {
            RResult::ROk(v) => v.into(),
            RResult::RErr(_) => ROption::RNone,
        }
    }
    fn extension(&self, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
        instance_extension(self, name, version)
    }
}

impl<P: Processor> ProcessorObj for ProcessorAdapter<P> {
    fn process<'a, 'b>(
        &mut self,
        inputs: RSlice<'b, InputBlock<'a>>,
        mut outputs: RSliceMut<'b, OutputBlock<'a>>,
    ) -> RResult<(), PluginError> {
        let me = self as *const Self as usize;
        let inputs = inputs.as_slice();
        let end = !inputs.is_empty()
            && inputs
                .iter()
                .all(|b| b.flags & crate::abi::FLAG_END_OF_STREAM != 0);
        if end {
            guard_audio_in("finish", me, || self.0.finish(outputs.as_mut_slice()))
        } else {
            guard_audio_in("process", me, || {
                self.0.process(inputs, outputs.as_mut_slice())
            })
        }
    }
    fn levels(&self) -> RSlice<'_, Level> {
        match panic::catch_unwind(AssertUnwindSafe(|| self.0.levels())) {
            Ok(levels) => levels.into(),
            Err(_) => RSlice::EMPTY,
        }
    }
    fn extension(&self, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
        #[cfg(tapeline_api_next)]
        if name.as_str() == crate::next::LATENCY_EXTENSION && version == 1 {
            return ROption::RSome(RawExtension::new(
                LatencyTable::<P>::TABLE,
                (self as *const Self).cast(),
            ));
        }
        instance_extension(self, name, version)
    }
}

#[cfg(tapeline_api_next)]
struct LatencyTable<P>(std::marker::PhantomData<P>);

#[cfg(tapeline_api_next)]
impl<P: Processor> LatencyTable<P> {
    const TABLE: &'static crate::next::LatencyV1 = &crate::next::LatencyV1 {
        latency_frames: next_latency::<P>,
    };
}

#[cfg(tapeline_api_next)]
extern "C" fn next_latency<P: Processor>(instance: *const c_void) -> u32 {
    // SAFETY: `instance` is the adapter the extension was asked of, alive while it is used.
    let me = unsafe { &*instance.cast::<ProcessorAdapter<P>>() };
    me.0.latency_frames()
}

impl<S: Storage> StorageObj for StorageAdapter<S> {
    fn write<'a>(&mut self, block: &InputBlock<'a>) -> RResult<(), PluginError> {
        let me = self as *const Self as usize;
        guard_audio_in("write", me, || self.0.write(block))
    }
    fn flush(&mut self) -> RResult<(), PluginError> {
        let me = self as *const Self as usize;
        guard_in(me, || self.0.flush())
    }
    fn finalize(&mut self) -> RResult<StorageReport, PluginError> {
        let me = self as *const Self as usize;
        guard_in(me, || self.0.finalize())
    }
    fn extension(&self, name: RStr<'_>, version: u32) -> ROption<RawExtension> {
        instance_extension(self, name, version)
    }
}

/// The library header `export_plugin!` exports.
#[doc(hidden)]
pub const fn lib_header(constructor: extern "C" fn() -> RootModuleResult) -> LibHeader {
    // SAFETY: `export_plugin!` passes a constructor that returns
    // `__call_root_module_loader(f)` for an `f` returning `PluginLibraryRef`, so the erased
    // prefix it returns was made from a `PluginLibraryRef`, as `from_constructor` requires.
    unsafe { LibHeader::from_constructor::<PluginLibraryRef>(constructor, CheckTypeLayout::Yes) }
}

/// Export the plugins of a `cdylib` to Tapeline.
///
/// ```ignore
/// tapeline_plugin_api::export_plugin!(process: Gain, capture: Tone);
/// ```
///
/// Each entry is `kind: Type` with kind one of `capture`, `process`, `storage`. The macro
/// generates the library's root module and wraps every call into the plugin in `catch_unwind`.
/// In debug builds it installs a global allocator that reports allocations made inside
/// `read`/`process`/`finish`/`write`. A plugin built with `panic = "abort"` is refused at compile time: its panics
/// could not be caught and would end the host.
#[macro_export]
macro_rules! export_plugin {
    ($($kind:ident : $ty:ty),+ $(,)?) => {
        #[cfg(panic = "abort")]
        compile_error!(
            "Tapeline plugins must be built with panic = \"unwind\": export_plugin! turns a \
             panic into an error for the host, which panic = \"abort\" makes impossible. \
             Remove `panic = \"abort\"` from the profile that builds this plugin."
        );

        #[cfg(debug_assertions)]
        #[global_allocator]
        static __TAPELINE_ALLOCATOR: $crate::export::CheckingAllocator =
            $crate::export::CheckingAllocator;

        static __TAPELINE_ENTRIES: &[$crate::export::Entry] =
            &[$($crate::export::Entry::$kind::<$ty>()),+];

        /// This library as the host sees it, for the crate's own tests
        /// (`tapeline_plugin_api::testing::Library`).
        #[doc(hidden)]
        #[allow(dead_code)]
        fn __tapeline_library() -> $crate::testing::Library {
            $crate::testing::Library::new(__TAPELINE_ENTRIES, env!("CARGO_PKG_VERSION"))
        }

        extern "C" fn __tapeline_manifests()
            -> $crate::abi_stable::std_types::RVec<$crate::abi::PluginManifest>
        {
            $crate::export::manifests(__TAPELINE_ENTRIES, env!("CARGO_PKG_VERSION"))
        }
        extern "C" fn __tapeline_layout(
            name: $crate::abi_stable::std_types::RStr<'_>,
            config: $crate::abi_stable::std_types::RStr<'_>,
            ctx: $crate::abi::ContextRef<'_>,
        ) -> $crate::abi_stable::std_types::RResult<
            $crate::abi_stable::std_types::RVec<$crate::abi::OutputPort>,
            $crate::abi::PluginError,
        > {
            $crate::export::layout(__TAPELINE_ENTRIES, name, config, ctx)
        }
        extern "C" fn __tapeline_new_capture(
            name: $crate::abi_stable::std_types::RStr<'_>,
            config: $crate::abi_stable::std_types::RStr<'_>,
            ctx: $crate::abi::ContextRef<'_>,
        ) -> $crate::abi_stable::std_types::RResult<$crate::abi::CaptureBox, $crate::abi::PluginError> {
            $crate::export::new_capture(__TAPELINE_ENTRIES, name, config, ctx)
        }
        extern "C" fn __tapeline_new_processor(
            name: $crate::abi_stable::std_types::RStr<'_>,
            config: $crate::abi_stable::std_types::RStr<'_>,
            ctx: $crate::abi::ContextRef<'_>,
        ) -> $crate::abi_stable::std_types::RResult<$crate::abi::ProcessorBox, $crate::abi::PluginError> {
            $crate::export::new_processor(__TAPELINE_ENTRIES, name, config, ctx)
        }
        extern "C" fn __tapeline_new_storage(
            name: $crate::abi_stable::std_types::RStr<'_>,
            config: $crate::abi_stable::std_types::RStr<'_>,
            ctx: $crate::abi::ContextRef<'_>,
        ) -> $crate::abi_stable::std_types::RResult<$crate::abi::StorageBox, $crate::abi::PluginError> {
            $crate::export::new_storage(__TAPELINE_ENTRIES, name, config, ctx)
        }

        extern "C" fn __tapeline_extension(
            name: $crate::abi_stable::std_types::RStr<'_>,
            version: u32,
        ) -> $crate::abi_stable::std_types::ROption<$crate::abi::RawExtension> {
            $crate::export::library_extension(name, version)
        }

        fn __tapeline_root_module() -> $crate::abi::PluginLibraryRef {
            $crate::export::library(
                __tapeline_manifests,
                __tapeline_layout,
                __tapeline_new_capture,
                __tapeline_new_processor,
                __tapeline_new_storage,
                __tapeline_extension,
                __TAPELINE_ENTRIES,
            )
        }
        extern "C" fn __tapeline_erased_root() -> $crate::abi_stable::library::RootModuleResult {
            $crate::abi_stable::library::__call_root_module_loader(__tapeline_root_module)
        }
        /// The symbol abi_stable's loader looks up (what `#[export_root_module]` would emit).
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::abi_stable::library::LibHeader =
            $crate::export::lib_header(__tapeline_erased_root);
    };
}
