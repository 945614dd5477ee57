//! Opening the files wav-reader and wav-writer are given, safely: only regular files, never a
//! FIFO, a device, a socket, a folder or a kernel interface (/proc, /sys, …), and nothing ever
//! blocks on open. Every refusal is a config error at `path`.
//!
//! The path is looked at first (`symlink_metadata`, then `metadata`), and opened with
//! `O_NONBLOCK` (a FIFO without a peer would block `open` for ever) and `O_NOCTTY`, then
//! checked again on the open file (`fstat`, `fstatfs`), since it may have been swapped in
//! between.

use std::fs::{self, File, FileType, Metadata, OpenOptions};
use std::io;
use std::path::Path;

use tapeline_plugin_api::prelude::*;

/// What a non-regular file is, in words; `None` for a regular file.
fn special_kind(t: FileType) -> Option<&'static str> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    if t.is_dir() {
        return Some("a folder");
    }
    if t.is_symlink() {
        return Some("a symbolic link");
    }
    if !t.is_file() {
        return Some("not a regular file");
    }
    None
}

/// The error for `path`, which is `kind` (from [`special_kind`]).
fn not_regular(plugin: &str, path: &Path, kind: &str) -> PluginError {
    let what = if kind.starts_with("not ") {
        kind.to_string()
    } else {
        format!("{kind}, not a regular file")
    };
    PluginError::config(
        "path",
        format!(
            "`{}` is {what}: {plugin} only {} regular files",
            path.display(),
            if plugin == "wav-reader" {
                "reads"
            } else {
                "writes"
            }
        ),
    )
}

/// A symlink's target, for messages.
fn link_target(path: &Path) -> String {
    fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string())
}

fn dangling(path: &Path) -> PluginError {
    PluginError::config(
        "path",
        format!(
            "`{}` is a symbolic link to `{}`, which does not exist",
            path.display(),
            link_target(path)
        ),
    )
}

/// The symlink refusal of wav-writer.
pub(crate) fn symlink_refused(path: &Path) -> PluginError {
    PluginError::config(
        "path",
        format!(
            "`{}` is a symbolic link (to `{}`); wav-writer does not write through symbolic \
             links: set `follow_symlinks = true` to write to its target, or pick another path",
            path.display(),
            link_target(path)
        ),
    )
}

/// What is at `path` now, symlinks followed, when something is: `Ok(None)` if nothing is. A dangling symlink is an error; so is a symlink when `follow` is false.
pub(crate) fn existing(path: &Path, follow: bool) -> PluginResult<Option<Metadata>> {
    let cannot = |e: io::Error| {
        PluginError::config("path", format!("cannot check `{}`: {e}", path.display()))
    };
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        // Also a file where a folder should be: nothing is there (the writer names the cause).
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(cannot(e)),
    };
    if !m.file_type().is_symlink() {
        return Ok(Some(m));
    }
    match fs::metadata(path) {
        Ok(_) if !follow => Err(symlink_refused(path)),
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(dangling(path)),
        Err(e) => Err(cannot(e)),
    }
}

/// Refuse anything but a regular file on a real file system: `m` is what is at `path`
/// (symlinks followed), `file` the open file when there is one.
pub(crate) fn require_regular(
    plugin: &str,
    path: &Path,
    m: &Metadata,
    file: Option<&File>,
) -> PluginResult<()> {
    if let Some(kind) = special_kind(m.file_type()) {
        return Err(not_regular(plugin, path, kind));
    }
    if let Some(fs_name) = pseudo_file_system(path, file) {
        return Err(not_regular(
            plugin,
            path,
            &format!("on {fs_name} (a kernel interface)"),
        ));
    }
    Ok(())
}

/// The name of the kernel interface file system `path` (or `file`) is on, if it is on one.
#[cfg(target_os = "linux")]
fn pseudo_file_system(path: &Path, file: Option<&File>) -> Option<&'static str> {
    // From linux/magic.h. Files there look regular but are kernel interfaces: reading may
    // block, writing may change the system.
    const PSEUDO: &[(u32, &str)] = &[
        (0x9fa0, "procfs"),
        (0x6265_6572, "sysfs"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"),
        (0x0027_e0eb, "cgroupfs"),
        (0x6367_7270, "cgroup2fs"),
        (0x6265_6570, "configfs"),
        (0xcafe_4a11, "bpffs"),
        (0x6165_676c, "pstorefs"),
        (0xde5e_81e4, "efivarfs"),
        (0x4249_4e4d, "binfmt_misc"),
        (0x6573_5543, "fusectl"),
        (0xf97c_ff8c, "selinuxfs"),
        (0x1980_0202, "mqueue"),
    ];
    let st = match file {
        Some(f) => rustix::fs::fstatfs(f).ok()?,
        None => rustix::fs::statfs(path).ok()?,
    };
    // f_type is a C long: compare its low 32 bits, where every magic lives.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u32;
    PSEUDO.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n)
}

#[cfg(not(target_os = "linux"))]
fn pseudo_file_system(_path: &Path, _file: Option<&File>) -> Option<&'static str> {
    None
}

/// Add `O_NONBLOCK` and `O_NOCTTY` (and `O_NOFOLLOW` unless `follow`) to `options`.
#[cfg(unix)]
fn never_block(options: &mut OpenOptions, follow: bool) {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = OFlags::NONBLOCK | OFlags::NOCTTY;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    options.custom_flags(flags.bits() as i32);
}

#[cfg(not(unix))]
fn never_block(_options: &mut OpenOptions, _follow: bool) {}

/// Back to blocking I/O on a file opened by [`open`], once it is known to be regular.
#[cfg(unix)]
fn blocking_again(file: &File) -> io::Result<()> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    let flags = fcntl_getfl(file)?;
    fcntl_setfl(file, flags.difference(OFlags::NONBLOCK))?;
    Ok(())
}

#[cfg(not(unix))]
fn blocking_again(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Whether an open error means the last component was a symlink `O_NOFOLLOW` refused, or a
/// FIFO nobody reads (`ENXIO` for a non-blocking write-only open).
#[cfg(unix)]
fn open_refusal(e: &io::Error) -> Option<bool> {
    use rustix::io::Errno;
    let errno = Errno::from_io_error(e)?;
    if errno == Errno::LOOP {
        Some(true)
    } else if errno == Errno::NXIO {
        Some(false)
    } else {
        None
    }
}

#[cfg(not(unix))]
fn open_refusal(_e: &io::Error) -> Option<bool> {
    None
}

/// Open `path` with `options` without blocking and without following a symlink unless
/// `follow`; then make sure it is a regular file on a real file system, and switch it back
/// to blocking I/O. Errors of the open itself are returned as they are (to the caller's words),
/// except a refused symlink or a FIFO, which are config errors at `path`.
pub(crate) fn open(
    plugin: &str,
    path: &Path,
    options: &mut OpenOptions,
    follow: bool,
) -> PluginResult<Result<File, io::Error>> {
    never_block(options, follow);
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) => {
            return match open_refusal(&e) {
                Some(true) => Err(symlink_refused(path)),
                Some(false) => Err(not_regular(plugin, path, "a FIFO (named pipe)")),
                None => Ok(Err(e)),
            }
        }
    };
    let m = file.metadata().map_err(|e| {
        PluginError::config("path", format!("cannot check `{}`: {e}", path.display()))
    })?;
    require_regular(plugin, path, &m, Some(&file))?;
    blocking_again(&file)
        .map_err(|e| PluginError::io(format!("opening `{}`: {e}", path.display())))?;
    Ok(Ok(file))
}

/// Open a file to read it (symlinks followed): a regular file, or a config error at `path`.
pub(crate) fn open_to_read(plugin: &str, path: &Path) -> PluginResult<File> {
    let shown = path.display();
    let Some(m) = existing(path, true)? else {
        return Err(PluginError::config("path", format!("`{shown}` not found")));
    };
    require_regular(plugin, path, &m, None)?;
    open(plugin, path, OpenOptions::new().read(true), true)?.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => PluginError::config("path", format!("`{shown}` not found")),
        _ => PluginError::config("path", format!("cannot open `{shown}`: {e}")),
    })
}
