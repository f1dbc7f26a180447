//! The command line: parsing, dispatch, errors and logging.
//!
//! One module per subcommand, each with an `Args` (clap) and a `run`. To add a
//! command, add its module, a variant to [`Command`] and an arm to [`run`]; a
//! command that needs the tokio runtime itself (e.g. a FUSE mount) gets `&rt`.
//! May call: `atlasfs` (the library) only.

mod compact;
mod create;
mod get;
mod info;
mod ls;
mod mount;
mod progress;
mod put;
mod rm;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use atlasfs::fs::npy::NpyError;
use atlasfs::store::backend::{Location, RemoteOptions};
use atlasfs::store::meta::MetaFile;
use atlasfs::{Atlas, StoreOptions};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "atlasfs", version, about = "Manage an atlas 0.10 array store; move arrays in and out as NumPy .npy files.")]
#[command(
    after_help = "STORE is a directory path, file:///abs/path, memory://, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix.\nLogging: set RUST_LOG (e.g. RUST_LOG=atlasfs=debug); the default is warn (info for a background mount). Commands and 'mount --foreground' log to stderr; a background mount logs to its --log-file (default /tmp/atlasfs-<mountpoint>.log), appended with a separator line per mount."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// No progress bars (they are drawn only when stderr is a terminal).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// How to reach a remote STORE; each overrides the matching environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// Object-store endpoint, e.g. http://127.0.0.1:9000 (AWS_ENDPOINT_URL, AZURE_ENDPOINT).
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3 region (AWS_REGION).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Allow a plain http:// endpoint (AWS_ALLOW_HTTP=true).
    #[arg(long, global = true)]
    pub allow_http: bool,
    /// Seconds one request may take before it is abandoned and retried.
    #[arg(long, global = true, default_value_t = 30.0, value_name = "SECS")]
    pub request_timeout: f64,
    /// Retries of a failed request, with exponential backoff.
    #[arg(long, global = true, default_value_t = 5)]
    pub retries: usize,
    /// Seconds an operation may take with all its retries; then it fails (EIO through a mount).
    #[arg(long, global = true, default_value_t = 60.0, value_name = "SECS")]
    pub retry_timeout: f64,
}

impl RemoteArgs {
    fn options(&self) -> RemoteOptions {
        let secs = |s: f64| std::time::Duration::from_secs_f64(s.max(0.001));
        RemoteOptions {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http || self.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")),
            request_timeout: secs(self.request_timeout),
            retries: self.retries,
            retry_timeout: secs(self.retry_timeout),
        }
    }
}

static REMOTE: std::sync::OnceLock<RemoteOptions> = std::sync::OnceLock::new();

/// A STORE argument as a location, reached with the command line's remote options.
pub fn location(store: &str) -> Result<Location> {
    Ok(Location::parse(store)?.with_remote(REMOTE.get().cloned().unwrap_or_default()))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty store.
    Create(create::Args),
    /// List the datasets, or one dataset's arrays.
    Ls(ls::Args),
    /// Store a .npy file as an array (creating the dataset, replacing the array).
    Put(put::Args),
    /// Write an array out as a .npy file.
    Get(get::Args),
    /// Delete a dataset or one of its arrays.
    Rm(rm::Args),
    /// Rewrite every array file as a single layer, dropping deleted and overwritten data (arrays deleted from every dataset included).
    Compact(compact::Args),
    /// Show counts, sizes and formats.
    Info(info::Args),
    /// Mount the store as <dataset>/<array>.npy files (FUSE).
    Mount(mount::Args),
    /// Flush and unmount a mounted store.
    Unmount(mount::UnmountArgs),
}

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Shown as the detail's own words when it carries one (`Error::message`).
    #[error("{}", .0.message())]
    Store(#[from] atlasfs::Error),
    /// The store to open is not there (the library's `StoreNotFound` names no path).
    #[error("no atlas store at {0}")]
    NoStore(String),
    #[error("{path}: {source}")]
    Npy { path: String, source: NpyError },
    #[error("{path}: {source}")]
    File { path: String, source: std::io::Error },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Parses the arguments, runs the command, reports a failure on one line of stderr.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand) {
                e.exit();
            }
            return report(&clap_message(&e), 2);
        }
    };
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e.to_string(), e.exit_code()),
    }
}

fn report(msg: &str, code: u8) -> ExitCode {
    let line = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("atlasfs: error: {line}");
    ExitCode::from(code)
}

/// clap's multi-line message as one line, without the usage block.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let body: Vec<&str> = text.lines().take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information")).map(str::trim).filter(|l| !l.is_empty()).collect();
    let msg = body.join(" ");
    format!("{} (see 'atlasfs --help')", msg.strip_prefix("error: ").unwrap_or(&msg))
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let mut filter = EnvFilter::builder().with_default_directive(LevelFilter::WARN.into()).from_env_lossy();
    // fuser warns "Failed to umount filesystem: Invalid argument" when a session
    // ends because the filesystem was unmounted already (`umount`, `atlasfs
    // unmount`): the normal end of a mount, so not shown unless asked for.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("fuser"))
        && let Ok(d) = "fuser::session=error".parse()
    {
        filter = filter.add_directive(d);
    }
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).try_init();
}

/// Blocks being fetched or decoded (4-16 MiB) are allocated and freed all the
/// time. glibc raises its mmap threshold each time one is freed, after which such
/// buffers come from its heaps and stay resident: a cold 512 MiB `np.load` through
/// a mount peaked at 330-359 MiB of RSS (cache budget 256 MiB). With the threshold
/// fixed at 2 MiB (which also stops the raising) blocks go back to the system when
/// freed while READ replies (at most 1 MiB) stay on the heap: 273-288 MiB, 0.97-1.64
/// s; at 256 KiB, every reply mapped anew, 264-266 MiB but 1.37-1.94 s (4
/// interleaved rounds each).
fn keep_large_buffers_unpooled() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc allocator parameter; called before the
    // runtime's threads start allocating.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
    }
}

/// Builds the runtime and runs one command on it.
pub fn run(cli: Cli) -> Result<()> {
    keep_large_buffers_unpooled();
    let _ = REMOTE.set(cli.remote.options());
    progress::set_quiet(cli.quiet);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| CliError::File { path: "tokio runtime".into(), source: e })?;
    match cli.command {
        Command::Create(a) => rt.block_on(create::run(a)),
        Command::Ls(a) => rt.block_on(ls::run(a)),
        Command::Put(a) => rt.block_on(put::run(a)),
        Command::Get(a) => rt.block_on(get::run(a)),
        Command::Rm(a) => rt.block_on(rm::run(a)),
        Command::Compact(a) => rt.block_on(compact::run(a)),
        Command::Info(a) => rt.block_on(info::run(a)),
        Command::Mount(a) => mount::run(a, &rt),
        Command::Unmount(a) => mount::unmount(a),
    }
}

/// Opens an existing store. A local directory without a metadata file is refused
/// (the engine would open it as an empty store, and a later flush would turn an
/// arbitrary directory into a store).
pub async fn open_store(store: &str) -> Result<Atlas> {
    open_store_with(store, StoreOptions::default()).await
}

/// [`open_store`] with store options: one listing and one metadata GET for a remote store.
pub async fn open_store_with(store: &str, options: StoreOptions) -> Result<Atlas> {
    let location = location(store)?;
    if let Location::Local(dir) = &location
        && !MetaFile::ALL.iter().any(|m| dir.join(m.file_name()).is_file())
    {
        return Err(CliError::NoStore(format!("{} (no atlas.json or other metadata file; make one with 'atlasfs create')", dir.display())));
    }
    let atlas = location.open(options).await?;
    if !atlas.exists() {
        return Err(CliError::NoStore(format!("{} (no metadata file; make one with 'atlasfs create')", location.redacted())));
    }
    Ok(atlas)
}

/// Splits `DATASET[/ARRAY]` and validates both names.
pub fn split_target(target: &str, need_array: bool) -> Result<(String, Option<String>)> {
    let (dataset, array) = match target.split_once('/') {
        Some((d, a)) => (d, Some(a)),
        None => (target, None),
    };
    atlasfs::store::validate_name(dataset)?;
    if let Some(a) = array {
        atlasfs::store::validate_name(a)?;
    } else if need_array {
        return Err(CliError::Usage(format!("expected DATASET/ARRAY, got {target:?}")));
    }
    Ok((dataset.to_string(), array.map(str::to_string)))
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::File { path: "stdout".into(), source: e }),
        _ => Ok(()),
    }
}

/// Whether stdout is a terminal (binary output is refused there).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    for r in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `(4, 6)`, `(5,)`, `()`: numpy's spelling of a shape.
pub fn shape_str(shape: &[usize]) -> String {
    match shape {
        [a] => format!("({a},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(split_target("ds/a", true).unwrap(), ("ds".into(), Some("a".into())));
        assert_eq!(split_target("ds", false).unwrap(), ("ds".into(), None));
        assert!(matches!(split_target("ds", true), Err(CliError::Usage(_))));
        assert!(matches!(split_target("_ds/a", true), Err(CliError::Store(atlasfs::Error::InvalidName(_)))));
        assert!(matches!(split_target("ds/a/b", true), Err(CliError::Store(atlasfs::Error::InvalidName(_)))));
        assert!(matches!(split_target("ds/", true), Err(CliError::Store(atlasfs::Error::InvalidName(_)))));
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()], vec!["s".into(), "".into()]]);
        assert_eq!(t, "A     BB\nlong  x\ns\n");
        assert_eq!(shape_str(&[]), "()");
        assert_eq!(shape_str(&[5]), "(5,)");
        assert_eq!(shape_str(&[4, 6]), "(4, 6)");
    }

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
