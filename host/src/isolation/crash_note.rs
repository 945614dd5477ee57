//! When a plugin that is not isolated crashes the host itself (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
//! SIGABRT), the process cannot survive, but it can say what happened: an async-signal-safe
//! handler writes one line to stderr and a small crash note next to the run's outputs, naming
//! the stage whose thread crashed, its plugin, and the call and block each stage was in. Then
//! the handler that was there before (Rust's own, or the default) runs, and the process dies of
//! the signal as it would have. Storage files stay readable (their headers are synced).
//!
//! The handler only reads atomics and writes with raw syscalls: no allocation, no lock.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::Arc;

use crate::coordinator::component::Component;

const SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// What the handler needs, built before the run starts and never freed (a handler may read it
/// at any moment; one small leak per run).
struct Armed {
    note: CString,
    pipeline: String,
    stages: Vec<Arc<Component>>,
}

static ARMED: AtomicPtr<Armed> = AtomicPtr::new(std::ptr::null_mut());
/// Set once a note was written: a crash that leads to an abort writes one note, not two.
static WRITTEN: AtomicU32 = AtomicU32::new(0);
static PREVIOUS: [AtomicPtr<libc::sigaction>; 5] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; 5];

/// The kernel's id of the calling thread (what the handler compares stage threads by).
pub fn this_thread_id() -> u32 {
    // SAFETY: gettid is a plain syscall without arguments.
    unsafe { libc::gettid() as u32 }
}

/// Install the handler for this run: the note goes to `folder/<pipeline>.crash-<pid>.txt`.
pub fn arm(folder: &Path, pipeline: &str, stages: Vec<Arc<Component>>) {
    let file = folder.join(format!("{pipeline}.crash-{}.txt", std::process::id()));
    let Ok(note) = CString::new(file.as_os_str().as_bytes()) else {
        return;
    };
    let armed = Box::into_raw(Box::new(Armed {
        note,
        pipeline: pipeline.to_string(),
        stages,
    }));
    ARMED.store(armed, Ordering::Release);
    for (i, &sig) in SIGNALS.iter().enumerate() {
        if !PREVIOUS[i].load(Ordering::Acquire).is_null() {
            continue;
        }
        // SAFETY: a plain sigaction with a handler that only does async-signal-safe work; the
        // previous action is kept (leaked) so the handler can hand the signal on to it.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let old = Box::into_raw(Box::new(std::mem::zeroed::<libc::sigaction>()));
            if libc::sigaction(sig, &action, old) == 0 {
                PREVIOUS[i].store(old, Ordering::Release);
            }
        }
    }
}

extern "C" fn handler(sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    if WRITTEN.swap(1, Ordering::AcqRel) == 0 {
        let armed = ARMED.load(Ordering::Acquire);
        // SAFETY: `arm` stores a pointer to an `Armed` that is never freed.
        if let Some(armed) = unsafe { armed.as_ref() } {
            write_note(armed, sig);
        }
    }
    // Hand the signal on: restore what was there before and return; the fault happens again
    // (or abort() raises again) and that handler, or the default action, ends the process.
    if let Some(i) = SIGNALS.iter().position(|&s| s == sig) {
        let old = PREVIOUS[i].load(Ordering::Acquire);
        if !old.is_null() {
            // SAFETY: `old` is the action saved by `arm`, never freed.
            unsafe { libc::sigaction(sig, old, std::ptr::null_mut()) };
        }
    }
}

/// A fixed buffer written to without allocating.
struct Line {
    buf: [u8; 1024],
    len: usize,
}

impl Line {
    fn put(&mut self, s: &[u8]) -> &mut Self {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }
    fn num(&mut self, mut v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..])
    }
}

fn write_note(armed: &Armed, sig: libc::c_int) {
    // SAFETY: gettid is a plain syscall.
    let tid = unsafe { libc::gettid() } as u32;
    let mut line = Line {
        buf: [0; 1024],
        len: 0,
    };
    line.put(b"tapeline: crashed: ")
        .put(signal_name(sig))
        .put(b" in pipeline `");
    line.put(armed.pipeline.as_bytes()).put(b"`");
    for c in &armed.stages {
        let crashed_here = c.stats.thread_id.load(Ordering::Relaxed) == tid;
        let call = c.stats.in_call();
        if !crashed_here && call.is_none() {
            continue;
        }
        line.put(if crashed_here {
            b"; in stage `"
        } else {
            b"; also busy: stage `"
        });
        line.put(c.who.id.as_bytes())
            .put(b"` (plugin `")
            .put(c.who.plugin.as_bytes())
            .put(b"`)");
        if let Some((call, _)) = call {
            line.put(b", during `")
                .put(call.as_str().as_bytes())
                .put(b"`");
        }
        line.put(b" at block ")
            .num(c.stats.blocks.load(Ordering::Relaxed));
    }
    line.put(b"; note: ").put(armed.note.as_bytes()).put(b"\n");
    let text = &line.buf[..line.len];
    // SAFETY: write and open are async-signal-safe; the buffers are valid for their lengths.
    unsafe {
        libc::write(2, text.as_ptr().cast(), text.len());
        let fd = libc::open(
            armed.note.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        );
        if fd >= 0 {
            libc::write(fd, text.as_ptr().cast(), text.len());
            libc::fsync(fd);
            libc::close(fd);
        }
    }
}

fn signal_name(sig: libc::c_int) -> &'static [u8] {
    match sig {
        libc::SIGSEGV => b"SIGSEGV (invalid memory access)",
        libc::SIGBUS => b"SIGBUS (bus error)",
        libc::SIGILL => b"SIGILL (illegal instruction)",
        libc::SIGFPE => b"SIGFPE (arithmetic fault)",
        libc::SIGABRT => b"SIGABRT (abort)",
        _ => b"a fatal signal",
    }
}
