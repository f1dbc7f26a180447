//! FUSE over io_uring, measured (issue 13, item 2): a self-contained probe, not product code.
//!
//! fuser 0.18 speaks only the classic transport (threads `read(2)` a request from
//! `/dev/fuse` and `write(2)` the reply), so this probe speaks the FUSE protocol itself,
//! just enough for a trivial read-only filesystem: one directory holding `a0.npy` …
//! `a{N-1}.npy`, each a (24,) little-endian float32 array `arange(24) + i`, served from
//! memory. It can serve it four ways (`--mode`):
//!
//! - `classic`: threads blocking in `read(/dev/fuse)` (what fuser and atlasfs do);
//! - `classic-poll`: the same with `/dev/fuse` non-blocking: after each reply a thread
//!   spins on `read` for `--poll-us` (50 µs) before it blocks in `poll(2)`;
//! - `uring`: INIT answered with `FUSE_OVER_IO_URING`, then one io_uring queue per
//!   possible CPU, each served by a thread pinned to that CPU, `--depth` ring entries
//!   each: `FUSE_IO_URING_CMD_REGISTER`, then `COMMIT_AND_FETCH` (the reply to one
//!   request and the fetch of the next in one SQE). The kernel queues a request on the
//!   queue of the CPU the caller runs on (Documentation/filesystems/fuse-io-uring.rst,
//!   fs/fuse/dev_uring.c). One thread still reads `/dev/fuse` for what never goes over
//!   the ring (INIT, FORGET, INTERRUPT);
//! - `uring-poll`: the same, the queue thread spinning on its completion queue for
//!   `--poll-us` after each commit before it blocks in `io_uring_enter`.
//!
//! Usage: `fuse_uring_probe MOUNTPOINT [--mode M] [--files N] [--poll-us U] [--threads T]
//! [--fallback] [--leave-enable-uring]` (root). `--fallback`: in an io_uring mode, when a
//! queue's `REGISTER` fails (enable_uring N, a kernel without it), log one line and serve
//! everything from `/dev/fuse` — the fallback atlasfs would need — instead of exiting;
//! `--leave-enable-uring`: do not touch the parameter. It mounts with mount(2), prints `ready` once requests can be served, serves
//! until its stdin closes (or SIGINT/SIGTERM), then unmounts (`fusermount3 -u -z`, from
//! a guard that also runs on error and from a panic hook) and prints what it served to
//! stderr. The io_uring modes set `/sys/module/fuse/parameters/enable_uring` to Y if it
//! was N and put the old value back after unmounting. Nothing is bound to a network.
//! bench/latency.py times it against ext4; tests/fuse_uring_probe.rs checks its bytes.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Classic,
    ClassicPoll,
    Uring,
    UringPoll,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "classic" => Mode::Classic,
            "classic-poll" => Mode::ClassicPoll,
            "uring" => Mode::Uring,
            "uring-poll" => Mode::UringPoll,
            _ => return None,
        })
    }
    fn uring(self) -> bool {
        matches!(self, Mode::Uring | Mode::UringPoll)
    }
}

pub struct Options {
    pub mode: Mode,
    pub files: usize,
    pub poll: Duration,
    /// classic threads reading /dev/fuse (1 in the io_uring modes: the queues do the work)
    pub threads: usize,
    /// ring entries per queue
    pub depth: usize,
    /// io_uring modes: when registration fails, log one line and serve from /dev/fuse
    /// (what atlasfs's fallback would do) instead of failing
    pub fallback: bool,
    /// io_uring modes: set enable_uring to Y for the run (and restore it); false leaves it
    pub set_enable_uring: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { mode: Mode::Classic, files: 200, poll: Duration::from_micros(50), threads: 2, depth: 4, fallback: false, set_enable_uring: true }
    }
}

/// The bytes of `a{i}.npy`: format 1.0, (24,) `<f4`, `arange(24) + i`.
pub fn npy_bytes(i: usize) -> Vec<u8> {
    let mut header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (24,), }".to_vec();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(&header);
    for k in 0..24 {
        out.extend_from_slice(&((k + i) as f32).to_le_bytes());
    }
    out
}

// ---------------------------------------------------------------- the protocol (include/uapi/linux/fuse.h)

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_STATFS: u32 = 17;
const FUSE_RELEASE: u32 = 18;
const FUSE_INIT: u32 = 26;
const FUSE_OPENDIR: u32 = 27;
const FUSE_READDIR: u32 = 28;
const FUSE_RELEASEDIR: u32 = 29;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_IOCTL: u32 = 39;
const FUSE_BATCH_FORGET: u32 = 42;

const FUSE_ASYNC_READ: u32 = 1 << 0;
const FUSE_BIG_WRITES: u32 = 1 << 5;
const FUSE_MAX_PAGES: u32 = 1 << 22;
const FUSE_INIT_EXT: u32 = 1 << 30;
/// `FUSE_OVER_IO_URING` is bit 41 of the 64-bit flags: bit 9 of `flags2`.
const FUSE_OVER_IO_URING_FLAGS2: u32 = 1 << (41 - 32);
const FOPEN_KEEP_CACHE: u32 = 1 << 1;
const FOPEN_NOFLUSH: u32 = 1 << 5;

const FUSE_IO_URING_CMD_REGISTER: u32 = 1;
const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = 2;
const IN_HEADER: usize = 40;
const MAX_WRITE: usize = 128 * 1024;
const MAX_PAGES: u16 = 32;
/// Each ring entry's payload buffer: at least max(8192, max_write, max_pages × 4 KiB).
const PAYLOAD: usize = 256 * 1024;
/// struct fuse_uring_req_header: in_out[128], op_in[128], fuse_uring_ent_in_out (32).
const URING_HEADER: usize = 288;
const TTL_SECS: u64 = 10;

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4).map_or(0, |x| u32::from_le_bytes(x.try_into().unwrap()))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8).map_or(0, |x| u64::from_le_bytes(x.try_into().unwrap()))
}

/// Size of the fixed per-opcode struct that precedes the variable part of a request
/// (`in_args[0]`); io_uring delivers it in `op_in`, the rest in the payload.
fn op_struct_size(opcode: u32) -> usize {
    match opcode {
        FUSE_GETATTR => 16,
        FUSE_OPEN | FUSE_OPENDIR | FUSE_FORGET | FUSE_INTERRUPT => 8,
        FUSE_READ | FUSE_READDIR => 40,
        FUSE_RELEASE | FUSE_RELEASEDIR => 24,
        FUSE_IOCTL => 32,
        21 | 22 | 23 => 8, // SETXATTR (size, flags), GETXATTR, LISTXATTR
        34 => 8,           // ACCESS
        _ => 0,
    }
}

struct Fs {
    files: Vec<Vec<u8>>,
    uid: u32,
    gid: u32,
}

enum Reply {
    Data(Vec<u8>),
    Err(i32),
    None,
}

impl Fs {
    fn attr(&self, ino: u64) -> Option<Vec<u8>> {
        let (mode, nlink, size) = if ino == 1 { (libc::S_IFDIR | 0o755, 2, 0u64) } else { (libc::S_IFREG | 0o644, 1, self.files.get(ino.checked_sub(2)? as usize)?.len() as u64) };
        let mut a = Vec::with_capacity(88);
        for v in [ino, size, size.div_ceil(512), 0, 0, 0] {
            a.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0u32, 0, 0, mode, nlink, self.uid, self.gid, 0, 4096, 0] {
            a.extend_from_slice(&v.to_le_bytes());
        }
        Some(a)
    }

    fn handle(&self, opcode: u32, nodeid: u64, op: &[u8], payload: &[u8]) -> Reply {
        match opcode {
            FUSE_LOOKUP => {
                let name = payload.split(|&c| c == 0).next().unwrap_or(&[]);
                let ino = std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| n.strip_prefix('a')?.strip_suffix(".npy")?.parse::<usize>().ok())
                    .filter(|&i| nodeid == 1 && i < self.files.len() && name == format!("a{i}.npy").as_bytes());
                let Some(i) = ino else { return Reply::Err(libc::ENOENT) };
                let ino = i as u64 + 2;
                let mut out = Vec::with_capacity(128);
                for v in [ino, 0, TTL_SECS, TTL_SECS] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&[0u8; 8]);
                out.extend_from_slice(&self.attr(ino).unwrap());
                Reply::Data(out)
            }
            FUSE_GETATTR => match self.attr(nodeid) {
                Some(a) => {
                    let mut out = TTL_SECS.to_le_bytes().to_vec();
                    out.extend_from_slice(&[0u8; 8]);
                    out.extend_from_slice(&a);
                    Reply::Data(out)
                }
                None => Reply::Err(libc::ENOENT),
            },
            FUSE_OPEN | FUSE_OPENDIR => {
                let flags = if opcode == FUSE_OPEN { FOPEN_KEEP_CACHE | FOPEN_NOFLUSH } else { 0 };
                let mut out = vec![0u8; 16];
                out[8..12].copy_from_slice(&flags.to_le_bytes());
                Reply::Data(out)
            }
            FUSE_READ => {
                let Some(f) = nodeid.checked_sub(2).and_then(|i| self.files.get(i as usize)) else {
                    return Reply::Err(libc::EBADF);
                };
                let (off, size) = (u64_at(op, 8) as usize, u32_at(op, 16) as usize);
                let start = off.min(f.len());
                Reply::Data(f[start..(start + size).min(f.len())].to_vec())
            }
            FUSE_READDIR => {
                let (off, size) = (u64_at(op, 8) as usize, u32_at(op, 16) as usize);
                let mut out = Vec::new();
                let total = self.files.len() + 2;
                for idx in off..total {
                    let (ino, name, typ) = match idx {
                        0 => (1, ".".to_string(), libc::DT_DIR),
                        1 => (1, "..".to_string(), libc::DT_DIR),
                        i => (i as u64, format!("a{}.npy", i - 2), libc::DT_REG),
                    };
                    let rec = (24 + name.len()).next_multiple_of(8);
                    if out.len() + rec > size {
                        break;
                    }
                    out.extend_from_slice(&ino.to_le_bytes());
                    out.extend_from_slice(&(idx as u64 + 1).to_le_bytes());
                    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
                    out.extend_from_slice(&(typ as u32).to_le_bytes());
                    out.extend_from_slice(name.as_bytes());
                    out.resize(out.len() + rec - 24 - name.len(), 0);
                }
                Reply::Data(out)
            }
            FUSE_RELEASE | FUSE_RELEASEDIR => Reply::Data(Vec::new()),
            FUSE_STATFS => {
                let mut out = vec![0u8; 80];
                out[40..44].copy_from_slice(&4096u32.to_le_bytes());
                out[44..48].copy_from_slice(&255u32.to_le_bytes());
                out[48..52].copy_from_slice(&4096u32.to_le_bytes());
                Reply::Data(out)
            }
            FUSE_IOCTL => Reply::Err(libc::ENOTTY), // Python's isatty(): not a terminal
            FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT => Reply::None,
            _ => Reply::Err(libc::ENOSYS),
        }
    }
}

// ---------------------------------------------------------------- mount, guard, state

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// What a cleanup must undo; shared with the panic hook and the signal thread.
struct Undo {
    mountpoint: Option<PathBuf>,
    enable_uring_was: Option<String>,
}

static UNDO: Mutex<Undo> = Mutex::new(Undo { mountpoint: None, enable_uring_was: None });

/// Unmounts and restores `enable_uring`, once, whoever calls it first.
pub fn cleanup() {
    let mut u = UNDO.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = u.mountpoint.take() {
        let ok = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(&m).stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success());
        if !ok {
            let c = CString::new(m.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C string; MNT_DETACH needs no other state.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    if let Some(old) = u.enable_uring_was.take() {
        if let Err(e) = std::fs::write(ENABLE_URING, &old) {
            eprintln!("fuse_uring_probe: could not restore {ENABLE_URING} to {old}: {e}");
        }
    }
}

#[derive(Default)]
pub struct Counters {
    pub classic: AtomicU64,
    pub uring: AtomicU64,
    /// an io_uring mode that fell back to /dev/fuse (Options::fallback)
    pub fell_back: AtomicBool,
}

/// A mounted probe; dropping it unmounts (and restores `enable_uring`).
pub struct Probe {
    pub counters: Arc<Counters>,
    fd: RawFd,
}

impl Drop for Probe {
    fn drop(&mut self) {
        cleanup();
        // SAFETY: our own descriptor; the serving threads see errors and stop.
        unsafe { libc::close(self.fd) };
    }
}

fn possible_cpus() -> usize {
    // "0-1", "0-3,5": the kernel makes one queue per possible CPU
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_else(|_| "0".into());
    text.trim().split(',').filter_map(|r| r.rsplit('-').next()?.parse::<usize>().ok()).max().map_or(1, |m| m + 1)
}

impl Probe {
    pub fn start(mountpoint: &Path, opt: Options) -> Result<Probe, String> {
        if UNDO.lock().unwrap().mountpoint.is_some() {
            return Err("one probe per process: the unmount guard and enable_uring are process-wide".into());
        }
        if opt.mode.uring() && opt.set_enable_uring {
            let was =
                std::fs::read_to_string(ENABLE_URING).map_err(|e| format!("{ENABLE_URING}: {e}: this kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING, Linux 6.14+)"))?;
            let was = was.trim().to_string();
            if was != "Y" {
                std::fs::write(ENABLE_URING, "Y").map_err(|e| format!("echo Y > {ENABLE_URING}: {e} (needs root)"))?;
                UNDO.lock().unwrap().enable_uring_was = Some(was);
            }
        }
        let dev = CString::new("/dev/fuse").unwrap();
        // SAFETY: a valid path; the descriptor is ours until Drop.
        let fd = unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            cleanup();
            return Err(format!("open /dev/fuse: {}", std::io::Error::last_os_error()));
        }
        let fs = Arc::new(Fs {
            files: (0..opt.files).map(npy_bytes).collect(),
            // SAFETY: plain getters
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
        });
        let data = format!("fd={fd},rootmode=40000,user_id={},group_id={}", fs.uid, fs.gid);
        let c = |s: &str| CString::new(s).unwrap();
        let target = CString::new(mountpoint.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C strings for the duration of the call.
        let rc = unsafe { libc::mount(c("atlasfs-probe").as_ptr(), target.as_ptr(), c("fuse.atlasfs-probe").as_ptr(), libc::MS_NOSUID | libc::MS_NODEV, c(&data).as_ptr().cast()) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: our descriptor
            unsafe { libc::close(fd) };
            cleanup();
            return Err(format!("mount {}: {e} (needs root)", mountpoint.display()));
        }
        UNDO.lock().unwrap().mountpoint = Some(mountpoint.to_path_buf());
        let probe = Probe { counters: Arc::new(Counters::default()), fd };
        if opt.mode == Mode::ClassicPoll {
            // SAFETY: fcntl on our descriptor
            unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
        }
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let threads = if opt.mode.uring() { 1 } else { opt.threads.max(1) };
        let mode = opt.mode;
        let poll = opt.poll;
        let depth = opt.depth;
        let fallback = opt.fallback;
        let inited = Arc::new(AtomicBool::new(false));
        for _ in 0..threads {
            let (fs, counters, tx, inited) = (fs.clone(), probe.counters.clone(), ready_tx.clone(), inited.clone());
            thread::spawn(move || classic_loop(fd, &fs, mode, poll, depth, fallback, &counters, &tx, &inited));
        }
        drop(ready_tx);
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(probe),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the kernel sent no INIT within 10 s, or the queues did not register".into()),
        }
    }
}

fn write_reply(fd: RawFd, unique: u64, r: Reply) -> bool {
    let (err, body) = match r {
        Reply::None => return true,
        Reply::Err(e) => (-e, Vec::new()),
        Reply::Data(b) => (0, b),
    };
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&err.to_le_bytes());
    out.extend_from_slice(&unique.to_le_bytes());
    out.extend_from_slice(&body);
    // SAFETY: a valid buffer of that length
    let n = unsafe { libc::write(fd, out.as_ptr().cast(), out.len()) };
    // ENOENT: the request was interrupted meanwhile; not an error of ours
    n >= 0 || errno() == libc::ENOENT
}

fn init_reply(op: &[u8], mode: Mode) -> Reply {
    let (major, minor, max_readahead) = (u32_at(op, 0), u32_at(op, 4), u32_at(op, 8));
    if major != 7 {
        return Reply::Err(libc::EPROTO);
    }
    let mut out = vec![0u8; 64];
    out[0..4].copy_from_slice(&7u32.to_le_bytes());
    out[4..8].copy_from_slice(&minor.to_le_bytes());
    out[8..12].copy_from_slice(&max_readahead.to_le_bytes());
    let flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_INIT_EXT;
    out[12..16].copy_from_slice(&flags.to_le_bytes());
    out[16..18].copy_from_slice(&16u16.to_le_bytes()); // max_background
    out[18..20].copy_from_slice(&12u16.to_le_bytes()); // congestion_threshold
    out[20..24].copy_from_slice(&(MAX_WRITE as u32).to_le_bytes());
    out[24..28].copy_from_slice(&1u32.to_le_bytes()); // time_gran
    out[28..30].copy_from_slice(&MAX_PAGES.to_le_bytes());
    let flags2 = if mode.uring() { FUSE_OVER_IO_URING_FLAGS2 } else { 0 };
    out[32..36].copy_from_slice(&flags2.to_le_bytes());
    Reply::Data(out)
}

#[allow(clippy::too_many_arguments)]
fn classic_loop(
    fd: RawFd,
    fs: &Arc<Fs>,
    mode: Mode,
    poll: Duration,
    depth: usize,
    fallback: bool,
    counters: &Arc<Counters>,
    ready: &mpsc::Sender<Result<(), String>>,
    inited: &AtomicBool,
) {
    let mut buf = vec![0u8; MAX_WRITE + 64 * 1024];
    let mut spin_until = Instant::now();
    loop {
        // SAFETY: a valid buffer of that length
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match errno() {
                libc::EINTR | libc::ENOENT => continue,
                libc::EAGAIN => {
                    if Instant::now() >= spin_until {
                        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                        // SAFETY: one valid pollfd
                        unsafe { libc::poll(&mut p, 1, -1) };
                    }
                    continue;
                }
                _ => return, // ENODEV: unmounted
            }
        }
        let req = &buf[..n as usize];
        let (opcode, unique, nodeid) = (u32_at(req, 4), u64_at(req, 8), u64_at(req, 16));
        let body = &req[IN_HEADER.min(req.len())..];
        if opcode == FUSE_INIT {
            let ok = write_reply(fd, unique, init_reply(body, mode));
            if !ok {
                let _ = ready.send(Err(format!("INIT reply refused: {}", std::io::Error::last_os_error())));
                return;
            }
            if !inited.swap(true, Ordering::SeqCst) {
                if mode.uring() {
                    let r = match start_queues(fd, fs, mode, poll, depth, counters) {
                        Err(e) if fallback => {
                            eprintln!("fuse_uring_probe: io_uring transport unavailable: {e}; serving from /dev/fuse");
                            counters.fell_back.store(true, Ordering::SeqCst);
                            Ok(())
                        }
                        r => r,
                    };
                    let _ = ready.send(r);
                } else {
                    let _ = ready.send(Ok(()));
                }
            }
            continue;
        }
        counters.classic.fetch_add(1, Ordering::Relaxed);
        let split = op_struct_size(opcode).min(body.len());
        let r = fs.handle(opcode, nodeid, &body[..split], &body[split..]);
        if !write_reply(fd, unique, r) {
            return;
        }
        if mode == Mode::ClassicPoll {
            spin_until = Instant::now() + poll;
        }
    }
}

// ---------------------------------------------------------------- io_uring queues

/// One ring entry's buffers; boxed so their addresses stay put while the kernel holds them.
struct Entry {
    header: Box<[u64; URING_HEADER / 8]>,
    payload: Vec<u8>,
    iov: [libc::iovec; 2],
}

fn cmd_req(qid: u16, commit_id: u64) -> [u8; 80] {
    let mut c = [0u8; 80];
    c[8..16].copy_from_slice(&commit_id.to_le_bytes());
    c[16..18].copy_from_slice(&qid.to_le_bytes());
    c
}

/// An SQE128 carrying a FUSE uring command; `iov` (REGISTER only) becomes addr/len.
fn fuse_cmd(fd: RawFd, cmd: u32, qid: u16, commit_id: u64, iov: Option<*const libc::iovec>, ud: u64) -> squeue::Entry128 {
    let mut b = opcode::UringCmd80::new(types::Fd(fd), cmd).cmd(cmd_req(qid, commit_id));
    if let Some(iov) = iov {
        b = b.addr(Some(iov as u64));
    }
    let e = b.build().user_data(ud);
    if iov.is_none() {
        return e;
    }
    // The crate has no setter for sqe->len: FUSE wants the iovec count (2) there.
    // SAFETY: Entry128 is #[repr(C)] (io_uring_sqe, then 64 bytes); len is at byte 24.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(e) };
    raw[24..28].copy_from_slice(&2u32.to_le_bytes());
    // SAFETY: the same layout back
    unsafe { std::mem::transmute(raw) }
}

#[allow(clippy::too_many_arguments)]
fn start_queues(fd: RawFd, fs: &Arc<Fs>, mode: Mode, poll: Duration, depth: usize, counters: &Arc<Counters>) -> Result<(), String> {
    let n = possible_cpus();
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    for qid in 0..n {
        let (fs, counters, tx) = (fs.clone(), counters.clone(), tx.clone());
        thread::spawn(move || queue_loop(fd, qid as u16, &fs, mode, poll, depth, &counters, &tx));
    }
    drop(tx);
    let mut res = Ok(());
    for _ in 0..n {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => res = Err(e),
            Err(_) => res = Err("an io_uring queue thread died".into()),
        }
    }
    res
}

#[allow(clippy::too_many_arguments)]
fn queue_loop(fd: RawFd, qid: u16, fs: &Fs, mode: Mode, poll: Duration, depth: usize, counters: &Counters, ready: &mpsc::Sender<Result<(), String>>) {
    // The kernel hands a request to the queue of the CPU its caller runs on: serve it there.
    // SAFETY: a zeroed cpu_set_t, one CPU set, applied to this thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(qid as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> = match IoUring::builder().build((depth * 2) as u32) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("io_uring_setup: {e}")));
            return;
        }
    };
    let mut ents: Vec<Entry> = (0..depth)
        .map(|_| Entry { header: Box::new([0u64; URING_HEADER / 8]), payload: vec![0u8; PAYLOAD], iov: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2] })
        .collect();
    for (i, e) in ents.iter_mut().enumerate() {
        e.iov[0] = libc::iovec { iov_base: e.header.as_mut_ptr().cast(), iov_len: URING_HEADER };
        e.iov[1] = libc::iovec { iov_base: e.payload.as_mut_ptr().cast(), iov_len: PAYLOAD };
        let sqe = fuse_cmd(fd, FUSE_IO_URING_CMD_REGISTER, qid, 0, Some(e.iov.as_ptr()), i as u64);
        // SAFETY: the buffers live in `ents` until this thread ends, after the ring is gone
        unsafe { ring.submission().push(&sqe).expect("ring has room for depth entries") };
    }
    if let Err(e) = ring.submit() {
        let _ = ready.send(Err(format!("io_uring_enter (REGISTER): {e}")));
        return;
    }
    // A REGISTER that fails completes at once with -errno; one that works stays pending
    // until a request arrives.
    thread::sleep(Duration::from_millis(20));
    let mut pending: Vec<cqueue::Entry> = ring.completion().collect();
    if let Some(bad) = pending.iter().find(|c| c.result() < 0) {
        let e = std::io::Error::from_raw_os_error(-bad.result());
        let _ = ready.send(Err(format!("FUSE_IO_URING_CMD_REGISTER failed: {e} (is {ENABLE_URING} Y and the kernel built with CONFIG_FUSE_IO_URING?)")));
        return;
    }
    let _ = ready.send(Ok(()));
    loop {
        if pending.is_empty() {
            if mode == Mode::UringPoll {
                let until = Instant::now() + poll;
                while Instant::now() < until {
                    pending.extend(ring.completion());
                    if !pending.is_empty() {
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
            if pending.is_empty() {
                match ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(_) => return,
                }
                pending.extend(ring.completion());
            }
        }
        for cqe in pending.drain(..) {
            if cqe.result() < 0 {
                return; // the connection is gone (unmounted): ENOTCONN, ECANCELED
            }
            let e = &mut ents[cqe.user_data() as usize];
            // SAFETY: the header buffer is 288 bytes of plain data
            let h: &mut [u8; URING_HEADER] = unsafe { &mut *(e.header.as_mut_ptr() as *mut [u8; URING_HEADER]) };
            let (opcode, unique, nodeid) = (u32_at(&h[..], 4), u64_at(&h[..], 8), u64_at(&h[..], 16));
            let commit_id = u64_at(&h[..], 256 + 8);
            let payload_sz = (u32_at(&h[..], 256 + 16) as usize).min(PAYLOAD);
            counters.uring.fetch_add(1, Ordering::Relaxed);
            let r = fs.handle(opcode, nodeid, &h[128..256], &e.payload[..payload_sz]);
            let (err, body) = match r {
                Reply::Data(b) => (0i32, b),
                Reply::Err(x) => (-x, Vec::new()),
                Reply::None => (-libc::ENOSYS, Vec::new()),
            };
            h[0..4].copy_from_slice(&((16 + body.len()) as u32).to_le_bytes());
            h[4..8].copy_from_slice(&err.to_le_bytes());
            h[8..16].copy_from_slice(&unique.to_le_bytes());
            e.payload[..body.len()].copy_from_slice(&body);
            h[256 + 16..256 + 20].copy_from_slice(&(body.len() as u32).to_le_bytes());
            let sqe = fuse_cmd(fd, FUSE_IO_URING_CMD_COMMIT_AND_FETCH, qid, commit_id, None, cqe.user_data());
            // SAFETY: as above; at most `depth` entries are ever in flight
            unsafe { ring.submission().push(&sqe).expect("ring has room") };
        }
        if mode == Mode::UringPoll {
            if ring.submit().is_err() {
                return;
            }
        } else {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => return,
            }
            pending.extend(ring.completion());
        }
    }
}

// ---------------------------------------------------------------- main

fn usage() -> ! {
    eprintln!(
        "usage: fuse_uring_probe MOUNTPOINT [--mode classic|classic-poll|uring|uring-poll] [--files N] [--poll-us U] [--threads T] [--depth D] [--fallback] [--leave-enable-uring]"
    );
    std::process::exit(2)
}

#[allow(dead_code)] // tests/fuse_uring_probe.rs includes this file for Probe
fn main() {
    let mut args = std::env::args().skip(1);
    let mut mnt = None;
    let mut opt = Options::default();
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--mode" => opt.mode = Mode::parse(&val()).unwrap_or_else(|| usage()),
            "--files" => opt.files = val().parse().unwrap_or_else(|_| usage()),
            "--poll-us" => opt.poll = Duration::from_micros(val().parse().unwrap_or_else(|_| usage())),
            "--threads" => opt.threads = val().parse().unwrap_or_else(|_| usage()),
            "--depth" => opt.depth = val().parse().unwrap_or_else(|_| usage()),
            "--fallback" => opt.fallback = true,
            "--leave-enable-uring" => opt.set_enable_uring = false,
            _ if a.starts_with('-') => usage(),
            _ => mnt = Some(PathBuf::from(a)),
        }
    }
    let Some(mnt) = mnt else { usage() };
    // Unmount on a panic anywhere, and on SIGINT/SIGTERM (handled by a thread, not in a handler).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        cleanup();
        default_hook(info);
        std::process::exit(101);
    }));
    // SAFETY: a zeroed sigset filled by the libc calls; blocked in every thread spawned later.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let waited = set;
    thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: a valid set and out pointer
        unsafe { libc::sigwait(&waited, &mut sig) };
        cleanup();
        std::process::exit(128 + sig);
    });
    let mode = opt.mode;
    let probe = match Probe::start(&mnt, opt) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fuse_uring_probe: {e}");
            std::process::exit(1);
        }
    };
    println!("ready {mode:?}");
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let (c, u) = (probe.counters.classic.load(Ordering::Relaxed), probe.counters.uring.load(Ordering::Relaxed));
    drop(probe);
    eprintln!("fuse_uring_probe: {mode:?}: served {c} requests from /dev/fuse, {u} over io_uring");
}
