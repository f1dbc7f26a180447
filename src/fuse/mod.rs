//! The thin `fuser` adapter: each callback runs the matching [`AtlasFs`] operation
//! on the tokio runtime and replies. Every request gets a `tracing` span with its
//! id, inode and name; failures reply with the errno of the core's [`FsError`] and
//! log one line (debug for the caller's mistakes, warn for the store's failures).
//!
//! May call: [`crate::fs`] only.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, Session, SessionACL, TimeOrNow,
    WriteFlags,
};
use tracing::Instrument;

mod backing;

use crate::fs::{AtlasFs, FsError, Invalidate, Kind, NodeAttr, Opened};

/// How the kernel should mount the filesystem.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub read_only: bool,
    pub allow_other: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// Shown as the source in `mount` / `/proc/mounts`.
    pub fs_name: String,
    /// Serve extended attributes (`user.atlas.*`). Off, every xattr call answers
    /// ENOSYS, which makes the kernel stop asking for the life of the mount: `ls -l`
    /// then costs no round trip per entry for `security.selinux` and the ACL names.
    pub xattrs: bool,
}

pub struct FuseFs {
    core: Arc<AtlasFs>,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    xattrs: bool,
    /// Backing files registered for passthrough opens (backing.rs).
    backings: backing::Backings<fuser::BackingId>,
}

fn to_attr(a: &NodeAttr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: match a.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 128 * 1024,
        flags: 0,
    }
}

fn fopen(o: &Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if o.read_only {
        // Nothing to commit on close(2): spare the kernel a FLUSH round trip per close.
        f |= FopenFlags::FOPEN_NOFLUSH;
    }
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    f
}

/// The one log line of a refused request: warn for the store's own failures, debug
/// for the caller's mistakes (a missing name, a full directory, ...).
fn errno(e: &FsError, op: &str) -> Errno {
    refused(e, op, !e.is_user_error())
}

/// The kernel bounds a READ by the size it was given, so a failed one is never the
/// caller's mistake: logged at warn like the store's own failures (an `EINVAL` here
/// once hid a race at debug level), except `ESTALE`, a replaced version too large
/// to keep for a descriptor still reading it (troubleshooting.md).
fn read_errno(e: &FsError) -> Errno {
    refused(e, "read", e.errno != libc::ESTALE || !e.is_user_error())
}

fn refused(e: &FsError, op: &str, warn: bool) -> Errno {
    if warn {
        tracing::warn!(op, errno = e.errno, "{}", e.msg);
    } else {
        tracing::debug!(op, errno = e.errno, "{}", e.msg);
    }
    Errno::from_i32(e.errno)
}

fn name_str<'a>(name: &'a OsStr) -> Result<&'a str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

impl FuseFs {
    pub fn new(core: Arc<AtlasFs>, rt: tokio::runtime::Handle, xattrs: bool) -> Self {
        let ttl = core.config().ttl;
        FuseFs { core, rt, ttl, xattrs, backings: Default::default() }
    }

    /// Runs one core operation on the runtime inside the request's span.
    fn run<F: Future>(&self, span: tracing::Span, f: F) -> F::Output {
        self.rt.block_on(f.instrument(span))
    }

    /// Runs a core operation that may change the store, then tells the write-back
    /// timer (`fs::core::writeback`); with a delay of 0 that flushes, and a failed
    /// flush is the request's error (close(2) reports it).
    fn run_change<T, F: Future<Output = Result<T, FsError>>>(&self, span: tracing::Span, f: F) -> Result<T, FsError> {
        let core = &self.core;
        self.run(span, async move {
            let before = core.store_version();
            let r = f.await;
            let w = core.changed(before).await;
            r.and_then(|v| w.map(|()| v))
        })
    }
}

macro_rules! op_span {
    ($req:expr, $op:literal $(, $k:ident = $v:expr)*) => {
        tracing::debug_span!($op, req = $req.unique().0 $(, $k = ?$v)*)
    };
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // O_TRUNC arrives with open() instead of as a separate truncate, so a
        // truncating open can stage a rewrite without touching the stored array.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC | InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ = config.set_max_readahead(4 << 20);
        if self.core.passthrough_enabled() {
            // Backing files live on a plain local filesystem: stack depth 1.
            if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_err() || config.set_max_stack_depth(1).is_err() {
                self.core.disable_passthrough("this kernel offers no FUSE passthrough");
            }
        }
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn destroy(&mut self) {
        let core = self.core.clone();
        if let Err(e) = self.rt.block_on(async move { core.final_flush().await }) {
            tracing::error!(error = %e, "final flush at unmount failed");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Ok(n) = name_str(name) else { return reply.error(Errno::ENOENT) };
        match self.run(op_span!(req, "lookup", parent = parent.0, name = n), self.core.lookup(parent.0, n)) {
            Ok(a) => reply.entry(&self.ttl, &to_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e, "lookup")),
        }
    }

    /// FORGET (and each node of a BATCH_FORGET, which fuser's default splits up).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.run(op_span!(req, "getattr", ino = ino.0), self.core.getattr_fh(ino.0, fh.map(|f| f.0))) {
            Ok(a) => reply.attr(&self.ttl, &to_attr(&a)),
            Err(e) => reply.error(errno(&e, "getattr")),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mtime = mtime.map(|t| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => SystemTime::now(),
        });
        match self.run_change(op_span!(req, "setattr", ino = ino.0, size = size), self.core.setattr(ino.0, size, mtime)) {
            Ok(a) => reply.attr(&self.ttl, &to_attr(&a)),
            Err(e) => reply.error(errno(&e, "setattr")),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        let Ok(n) = name_str(name) else { return reply.error(Errno::EINVAL) };
        match self.run_change(op_span!(req, "mkdir", parent = parent.0, name = n), self.core.mkdir(parent.0, n)) {
            Ok(a) => reply.entry(&self.ttl, &to_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e, "mkdir")),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Ok(n) = name_str(name) else { return reply.error(Errno::ENOENT) };
        match self.run_change(op_span!(req, "unlink", parent = parent.0, name = n), self.core.unlink(parent.0, n)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "unlink")),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Ok(n) = name_str(name) else { return reply.error(Errno::ENOENT) };
        match self.run_change(op_span!(req, "rmdir", parent = parent.0, name = n), self.core.rmdir(parent.0, n)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "rmdir")),
        }
    }

    fn rename(&self, req: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags, reply: ReplyEmpty) {
        let (Ok(n), Ok(nn)) = (name_str(name), name_str(newname)) else { return reply.error(Errno::EINVAL) };
        if !flags.is_empty() {
            // RENAME_NOREPLACE / RENAME_EXCHANGE are not offered.
            return reply.error(Errno::EINVAL);
        }
        match self.run_change(op_span!(req, "rename", parent = parent.0, name = n, newparent = newparent.0, newname = nn), self.core.rename(parent.0, n, newparent.0, nn)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "rename")),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let span = op_span!(req, "open", ino = ino.0, flags = flags.0);
        match self.run(span.clone(), self.core.open(ino.0, flags.0)) {
            Ok(o) => match &o.backing {
                Some(file) => {
                    let _s = span.entered();
                    match self.backings.acquire(ino.0, file.id, || reply.open_backing(&*file.file)) {
                        Ok(id) => reply.opened_passthrough(FileHandle(o.fh), fopen(&o), &id),
                        Err(e) => {
                            let o = self.core.passthrough_refused(&o, &e);
                            reply.opened(FileHandle(o.fh), fopen(&o))
                        }
                    }
                }
                None => reply.opened(FileHandle(o.fh), fopen(&o)),
            },
            Err(e) => reply.error(errno(&e, "open")),
        }
    }

    fn read(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, size: u32, _flags: OpenFlags, _lock: Option<LockOwner>, reply: ReplyData) {
        match self.run(op_span!(req, "read", ino = ino.0, offset = offset, size = size), self.core.read(fh.0, offset, size)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(read_errno(&e)),
        }
    }

    fn write(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, data: &[u8], _wf: WriteFlags, _flags: OpenFlags, _lock: Option<LockOwner>, reply: ReplyWrite) {
        match self.run(op_span!(req, "write", ino = ino.0, offset = offset, size = data.len()), self.core.write(fh.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e, "write")),
        }
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        match self.run_change(op_span!(req, "flush", ino = ino.0), self.core.flush(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "flush")),
        }
    }

    fn release(&self, req: &Request, ino: INodeNo, fh: FileHandle, _flags: OpenFlags, _lock: Option<LockOwner>, _flush: bool, reply: ReplyEmpty) {
        if let Some(spool_id) = self.core.passthrough_file(fh.0) {
            self.backings.release(ino.0, spool_id);
        }
        match self.run_change(op_span!(req, "release", ino = ino.0), self.core.release(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "release")),
        }
    }

    fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.run(op_span!(req, "fsync", ino = ino.0), self.core.fsync(Some(fh.0))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "fsync")),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _s = op_span!(req, "opendir", ino = ino.0).entered();
        match self.core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e, "opendir")),
        }
    }

    fn readdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.run(op_span!(req, "readdir", ino = ino.0, offset = offset), self.core.readdir_handle(fh.0, ino.0, offset)) {
            Ok(v) => v,
            Err(e) => return reply.error(errno(&e, "readdir")),
        };
        let dots = [(".", ino.0, FileType::Directory), ("..", 1, FileType::Directory)];
        let all = dots.into_iter().chain(entries.iter().map(|(n, a)| (n.as_str(), a.ino, if a.kind == Kind::Dir { FileType::Directory } else { FileType::RegularFile })));
        for (i, (name, ino, kind)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let entries = match self.run(op_span!(req, "readdirplus", ino = ino.0, offset = offset), async {
            let me = self.core.getattr(ino.0).await?;
            let parent = self.core.getattr(1).await?;
            Ok::<_, FsError>((me, parent, self.core.readdir_handle(fh.0, ino.0, offset).await?))
        }) {
            Ok(v) => v,
            Err(e) => return reply.error(errno(&e, "readdirplus")),
        };
        let (me, parent, entries) = entries;
        let dots = [(".", me), ("..", parent)];
        let all = dots.iter().map(|(n, a)| (*n, a)).chain(entries.iter().map(|(n, a)| (n.as_str(), a)));
        for (i, (name, a)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(a.ino), (i + 1) as u64, name, &self.ttl, &to_attr(a), Generation(0)) {
                break;
            }
            if i >= 2 {
                // The kernel counts every entry but `.` and `..` as a lookup.
                self.core.entry_sent(ino.0, name, a.ino);
            }
        }
        reply.ok()
    }

    /// No ioctl is supported; ENOTTY (what a regular file answers, e.g. to the TCGETS
    /// that isatty sends) rather than fuser's ENOSYS and a warning per call.
    fn ioctl(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: fuser::IoctlFlags, _cmd: u32, _in: &[u8], _out: u32, reply: fuser::ReplyIoctl) {
        reply.error(Errno::ENOTTY);
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.core.releasedir(fh.0);
        reply.ok()
    }

    fn fsyncdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.run(op_span!(req, "fsyncdir", ino = ino.0), self.core.fsync(None)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "fsyncdir")),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Object storage has no fixed capacity; report plenty so tools do not refuse to copy.
        let blocks = 1u64 << 40;
        reply.statfs(blocks, blocks, blocks, 1 << 32, 1 << 32, 4096, 255, 4096);
    }

    fn setxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, value: &[u8], _flags: i32, _position: u32, reply: ReplyEmpty) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let Ok(n) = name_str(name) else { return reply.error(Errno::EINVAL) };
        match self.run_change(op_span!(req, "setxattr", ino = ino.0, name = n), self.core.setxattr(ino.0, n, value)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "setxattr")),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let Ok(n) = name_str(name) else { return reply.error(Errno::ENODATA) };
        match self.run(op_span!(req, "getxattr", ino = ino.0, name = n), self.core.getxattr(ino.0, n)) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno(&e, "getxattr")),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        match self.run(op_span!(req, "listxattr", ino = ino.0), self.core.listxattr(ino.0)) {
            Ok(names) => {
                let mut buf = vec![];
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() > size as usize {
                    reply.error(Errno::ERANGE)
                } else {
                    reply.data(&buf)
                }
            }
            Err(e) => reply.error(errno(&e, "listxattr")),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let Ok(n) = name_str(name) else { return reply.error(Errno::ENODATA) };
        match self.run_change(op_span!(req, "removexattr", ino = ino.0, name = n), self.core.removexattr(ino.0, n)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "removexattr")),
        }
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, flags: i32, reply: ReplyCreate) {
        let Ok(n) = name_str(name) else { return reply.error(Errno::EINVAL) };
        match self.run_change(op_span!(req, "create", parent = parent.0, name = n), self.core.create(parent.0, n, flags)) {
            Ok((a, o)) => reply.created(&self.ttl, &to_attr(&a), Generation(0), FileHandle(o.fh), fopen(&o)),
            Err(e) => reply.error(errno(&e, "create")),
        }
    }

    // Not supported, each refused with one log line (fuser's defaults log a
    // multi-line debug dump of their arguments).
    fn link(&self, _req: &Request, ino: INodeNo, _newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let e = FsError::new(libc::EPERM, format!("hard links are not supported (ln of inode {} as {:?})", ino.0, newname));
        reply.error(errno(&e, "link"));
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let e = FsError::new(libc::EPERM, format!("symbolic links are not supported (ln -s {} {:?})", target.display(), link_name));
        reply.error(errno(&e, "symlink"));
    }

    fn mknod(&self, _req: &Request, _parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, _rdev: u32, reply: ReplyEntry) {
        let e = FsError::new(libc::EPERM, format!("device files, fifos and sockets are not supported ({name:?})"));
        reply.error(errno(&e, "mknod"));
    }
}

/// Mounts `core` at `mountpoint`. The returned session serves requests when run;
/// dropping or unmounting it unmounts.
/// Raises the kernel's read-ahead for this mount to `kb` KiB. FUSE caps it at 128 KiB
/// (the default of the mount's backing device), so a 1 GiB `np.load` arrives as 8,192
/// 128 KiB READs; with a larger window the kernel sends up to 1 MiB per READ, several at
/// once. Call once the session serves requests: INIT resets the value. Needs root (or
/// write access to sysfs); without it reads work as before, and a log line says so.
pub fn raise_readahead(mountpoint: &Path, kb: u32) {
    // The mountpoint answering means INIT is done.
    if let Err(e) = std::fs::metadata(mountpoint) {
        tracing::debug!(error = %e, "mountpoint not answering; read-ahead left at the default");
        return;
    }
    let Ok(canon) = mountpoint.canonicalize() else { return };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let dev = info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let fstype = f.iter().position(|&x| x == "-").and_then(|i| f.get(i + 1)).copied().unwrap_or("");
        (f.get(4).map(|m| m.replace("\\040", " ")) == Some(canon.display().to_string()) && fstype.starts_with("fuse")).then(|| f[2].to_string())
    });
    let Some(dev) = dev else { return };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&knob, kb.to_string()) {
        Ok(()) => tracing::debug!(%knob, kb, "raised the kernel's read-ahead"),
        Err(e) => tracing::info!(%knob, error = %e, "could not raise the kernel's read-ahead (needs root); large sequential reads use 128 KiB requests"),
    }
}

pub fn session(core: Arc<AtlasFs>, rt: tokio::runtime::Handle, mountpoint: &Path, cfg: &MountConfig) -> io::Result<Session<FuseFs>> {
    let mut opts = vec![
        MountOption::FSName(cfg.fs_name.clone()),
        MountOption::Subtype("atlasfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    opts.push(if cfg.read_only { MountOption::RO } else { MountOption::RW });
    let mut config = Config::default();
    config.mount_options = opts;
    config.acl = if cfg.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = cfg.threads > 1;
    core.attach();
    let session = Session::new(FuseFs::new(core.clone(), rt, cfg.xattrs), mountpoint, &config)?;
    // Notifications go out from their own thread: sent from inside a request
    // handler for the same inode they could deadlock against the kernel.
    let notifier = session.notifier();
    let (tx, rx) = std::sync::mpsc::channel::<Invalidate>();
    std::thread::Builder::new().name("fuse-invalidate".into()).spawn(move || {
        for what in rx {
            let r = match &what {
                Invalidate::Entry { parent, name } => notifier.inval_entry(INodeNo(*parent), OsStr::new(name)),
                Invalidate::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
            };
            if let Err(e) = r
                && e.raw_os_error() != Some(libc::ENOENT)
            {
                tracing::debug!(?what, error = %e, "kernel cache invalidation failed");
            }
        }
    })?;
    let tx = std::sync::Mutex::new(tx);
    core.set_invalidator(Arc::new(move |what| {
        let _ = tx.lock().map(|t| t.send(what));
    }));
    Ok(session)
}
