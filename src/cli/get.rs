//! `atlasfs get STORE DATASET/ARRAY [-o FILE.npy]`: an array as a `.npy` file.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use atlasfs::fs::npy::{self, NpyError};
use atlasfs::store::{DType, progress};

use super::progress::Bar;
use super::{CliError, Result, open_store, split_target, stdout_is_terminal};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a directory, or a URL (file://, memory://, s3://, gs://, az://)
    pub store: String,
    /// DATASET/ARRAY
    pub target: String,
    /// Write here instead of stdout
    #[arg(short, long, value_name = "FILE.npy")]
    pub output: Option<PathBuf>,
}

pub async fn run(args: Args) -> Result<()> {
    let (dataset, array) = split_target(&args.target, true)?;
    let array = array.expect("required above");
    if args.output.is_none() && stdout_is_terminal() {
        return Err(CliError::Usage("refusing to write binary .npy data to a terminal: use -o FILE.npy or redirect stdout".into()));
    }
    let atlas = open_store(&args.store).await?;
    let view = atlas.open_dataset(&dataset).await?;
    let schema = view.array_meta(&array).ok_or_else(|| atlasfs::Error::ArrayNotFound(format!("{array} (in dataset {dataset})")))?;
    if schema.dtype != DType::String && npy::descr_for(&schema.dtype).is_none() {
        return Err(CliError::Npy { path: format!("{dataset}/{array}"), source: NpyError::NoNpyForm(schema.dtype.name()) });
    }
    let bar = Bar::new();
    let bytes = schema.dtype.element_size().map_or(0, |n| n as u64 * schema.shape.iter().map(|&d| d as u64).product::<u64>());
    bar.phase("reading", bytes);
    let read = progress::scope(bar.sink(), view.read_cells(&array, &[], &[])).await?;
    let (shape, cells) = read.ok_or_else(|| atlasfs::Error::ArrayNotFound(format!("{array} (in dataset {dataset})")))?;
    bar.complete();
    bar.phase("writing", bytes);
    match &args.output {
        Some(path) => {
            let shown = path.display().to_string();
            let file = std::fs::File::create(path).map_err(|source| CliError::File { path: shown.clone(), source })?;
            let mut w = BufWriter::new(Counted(file, &bar));
            let written = npy::encode_to(&mut w, &schema.dtype, &shape, &cells).and_then(|_| w.flush().map_err(NpyError::Io));
            if let Err(e) = written {
                drop(w);
                let _ = std::fs::remove_file(path);
                return Err(CliError::Npy { path: shown, source: e });
            }
        }
        None => {
            let mut w = BufWriter::new(Counted(std::io::stdout().lock(), &bar));
            match npy::encode_to(&mut w, &schema.dtype, &shape, &cells).and_then(|_| w.flush().map_err(NpyError::Io)) {
                Ok(_) => {}
                Err(NpyError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(CliError::Npy { path: "stdout".into(), source: e }),
            }
        }
    }
    bar.complete();
    bar.finish(&format!("wrote {dataset}/{array}"), bytes);
    Ok(())
}

/// A writer that reports the bytes written to the progress bar.
struct Counted<'a, W>(W, &'a Bar);

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
