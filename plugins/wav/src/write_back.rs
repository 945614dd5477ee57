//! Early write-back: the writer asks the kernel to start writing each stretch of the file to
//! disk as soon as it has reached the file, so that a sync (every `sync_interval_ms`, or the
//! one at the end of a file job) waits only for the last stretch instead of all of it.
//!
//! Linux's `sync_file_range(SYNC_FILE_RANGE_WRITE)` starts the write-out of a range and returns;
//! it promises nothing about durability (the syncs still do that, and report any error). A
//! failure here is therefore ignored on purpose: it changes no byte of the file and no sync's
//! answer, only when the disk work happens. Elsewhere this does nothing.

use std::fs::File;

/// Start write-back once this many bytes have reached the file since the last start.
pub(crate) const STRETCH: u64 = 4 << 20;

/// Bytes `[from, to)` of `file` are in the page cache: start writing them to disk. Says
/// whether the kernel took the request (a pipe or a full disk does not).
#[cfg(target_os = "linux")]
pub(crate) fn start(file: &File, from: u64, to: u64) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to.saturating_sub(from)))
    else {
        return false;
    };
    // SAFETY: the descriptor is open for the length of the call (`file` is borrowed), and the
    // call reads no memory of this process.
    let done = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    done == 0
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start(_file: &File, _from: u64, _to: u64) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::{Read, Seek, Write};

    /// The request reaches the kernel for a file (and changes none of its bytes), and is
    /// refused for what has no pages to write (a pipe).
    #[test]
    fn write_back_starts_for_a_file_and_not_for_a_pipe() {
        let dir = std::env::temp_dir().join(format!("tapeline-wb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        let mut f = std::fs::File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let data: Vec<u8> = (0..super::STRETCH as usize + 4096)
            .map(|i| i as u8)
            .collect();
        f.write_all(&data).unwrap();
        assert!(super::start(&f, 0, data.len() as u64));
        let mut back = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut back).unwrap();
        assert!(back == data);
        let (reader, _writer) = std::io::pipe().unwrap();
        let pipe = std::fs::File::from(std::os::fd::OwnedFd::from(reader));
        assert!(!super::start(&pipe, 0, 4096));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
