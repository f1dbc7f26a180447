//! `atlasfs put STORE DATASET/ARRAY FILE.npy`: store a `.npy` file as an array.
//!
//! The file is read and checked completely before the store is opened, and the
//! store is flushed only when every step succeeded, so a failure changes nothing.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use atlasfs::fs::FsConfig;
use atlasfs::fs::layout::auto_chunk_shape;
use atlasfs::fs::npy::{self, NpyError};

use atlasfs::store::{Cells, progress};

use super::progress::Bar;
use super::{CliError, Result, open_store, split_target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a directory, or a URL (file://, memory://, s3://, gs://, az://)
    pub store: String,
    /// Where to put it: DATASET/ARRAY (the dataset is created if missing, the array replaced if present)
    pub target: String,
    /// The .npy file
    pub file: PathBuf,
    /// Chunk shape, comma-separated (default: whole trailing rows, about 4 MiB a chunk, as the mount picks)
    #[arg(long, value_delimiter = ',', value_name = "N,N,..")]
    pub chunks: Option<Vec<usize>>,
    /// Dimension names, comma-separated (default: dim_0,dim_1,..)
    #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
    pub dims: Option<Vec<String>>,
}

/// Checks the chunk shape and dimension names against the array's shape.
fn geometry(shape: &[usize], chunks: Option<Vec<usize>>, dims: Option<Vec<String>>) -> Result<(Option<Vec<usize>>, Vec<String>)> {
    let rank = shape.len();
    if let Some(c) = &chunks {
        if c.len() != rank {
            return Err(CliError::Usage(format!("--chunks has {} sizes, the array has rank {rank} (shape {})", c.len(), super::shape_str(shape))));
        }
        if let Some(i) = c.iter().position(|&n| n == 0) {
            return Err(CliError::Usage(format!("--chunks: axis {i} has chunk size 0")));
        }
    }
    let dims = match dims {
        None => (0..rank).map(|i| format!("dim_{i}")).collect(),
        Some(d) => {
            if d.len() != rank {
                return Err(CliError::Usage(format!("--dims has {} names, the array has rank {rank} (shape {})", d.len(), super::shape_str(shape))));
            }
            if d.iter().any(String::is_empty) {
                return Err(CliError::Usage("--dims: empty dimension name".into()));
            }
            let mut seen = HashSet::new();
            if let Some(dup) = d.iter().find(|n| !seen.insert(n.as_str())) {
                return Err(CliError::Usage(format!("--dims: dimension name {dup:?} given twice")));
            }
            d
        }
    };
    Ok((chunks, dims))
}

/// Reads and fully checks a `.npy` file: the header and the file size first, so a
/// bad or oversized file is refused before its data is loaded.
fn read_npy(file: &Path, path: &str, chunks: Option<&[usize]>, bar: &Bar) -> Result<npy::NpyArray> {
    let io = |source| CliError::File { path: path.to_string(), source };
    let bad = |source| CliError::Npy { path: path.to_string(), source };
    let mut f = std::fs::File::open(file).map_err(io)?;
    let header = npy::read_header(&mut f).map_err(bad)?;
    let et = header.element_type().map_err(bad)?;
    let expected = header.data_len().map_err(bad)?;
    let actual = f.metadata().map_err(io)?.len().saturating_sub(header.header_len as u64);
    if actual < expected as u64 {
        return Err(bad(NpyError::ShortPayload { expected, actual: actual as usize }));
    }
    if actual > expected as u64 {
        return Err(bad(NpyError::TrailingBytes((actual - expected as u64) as usize)));
    }
    if let Some(c) = chunks
        && et.is_fixed_width()
    {
        let bytes = c.iter().fold(et.itemsize as u128, |b, &n| b * n as u128);
        if bytes > u32::MAX as u128 {
            return Err(CliError::Usage(format!(
                "{path}: a chunk of --chunks {} holds {bytes} bytes, more than a chunk can (4 GiB); pass smaller --chunks",
                c.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
            )));
        }
    }
    bar.phase("reading", expected as u64);
    let mut payload = vec![0u8; expected];
    let mut done = 0;
    while done < expected {
        let n = f.read(&mut payload[done..(done + (8 << 20)).min(expected)]).map_err(io)?;
        if n == 0 {
            break; // shrank since the size check: decoding reports the short payload
        }
        done += n;
        bar.inc(n as u64);
    }
    payload.truncate(done);
    npy::decode_payload(&header, payload).map_err(bad)
}

pub async fn run(args: Args) -> Result<()> {
    let (dataset, array) = split_target(&args.target, true)?;
    let array = array.expect("required above");
    // The mount's rule for new names (control characters, 255 bytes for the dataset
    // directory and for `<array>.npy`), so that what `put` stores can be mounted.
    for name in [dataset.clone(), format!("{array}.npy")] {
        atlasfs::fs::names::check_new_name(&name).map_err(|e| CliError::Usage(e.msg))?;
    }
    let path = args.file.display().to_string();
    let bar = Bar::new();
    let data = read_npy(&args.file, &path, args.chunks.as_deref(), &bar)?;
    let (chunks, dims) = geometry(&data.shape, args.chunks, args.dims)?;
    // No --chunks: the mount's choice for a file written through it, so that a read
    // of a few elements decodes one chunk of about 4 MiB, not the whole array.
    let chunks = chunks.unwrap_or_else(|| {
        let elsize = data.dtype.element_size().unwrap_or(16);
        auto_chunk_shape(&data.shape, elsize, FsConfig::default().chunk_target_bytes)
    });

    // Everything below changes only memory until the final flush.
    let atlas = open_store(&args.store).await?;
    let view = if atlas.dataset_exists(&dataset) { atlas.open_dataset(&dataset).await? } else { atlas.create_dataset_shared(&dataset).await? };
    if view.array_meta(&array).is_some() {
        view.delete_array_shared(&array).await?;
    }
    view.define_array_dtype(&array, data.dtype.clone(), dims, data.shape.clone(), Some(chunks), None).await?;
    let start = vec![0; data.shape.len()];
    let bytes = match &data.cells {
        Cells::Fixed { bytes, .. } => bytes.len() as u64,
        _ => 0,
    };
    progress::scope(bar.sink(), async {
        // Encoding (chunks reported by the store), then writing ("writing", by the flush).
        bar.phase("encoding", bytes);
        view.write_cells(&array, &start, &data.shape, &data.cells).await?;
        atlas.flush_shared().await
    })
    .await?;
    bar.complete();
    bar.finish(&format!("stored {dataset}/{array}"), bytes);
    tracing::info!(dataset, array, dtype = data.dtype.name(), shape = ?data.shape, "stored");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_checks() {
        assert_eq!(geometry(&[4, 6], None, None).unwrap(), (None, vec!["dim_0".to_string(), "dim_1".to_string()]));
        assert_eq!(geometry(&[], None, None).unwrap(), (None, vec![]));
        assert!(geometry(&[4, 6], Some(vec![2]), None).is_err());
        assert!(geometry(&[4, 6], Some(vec![2, 0]), None).is_err());
        assert!(geometry(&[4, 6], None, Some(vec!["a".into()])).is_err());
        assert!(geometry(&[4, 6], None, Some(vec!["a".into(), "a".into()])).is_err());
        assert!(geometry(&[4, 6], None, Some(vec!["a".into(), "".into()])).is_err());
        assert!(geometry(&[4, 6], Some(vec![2, 3]), Some(vec!["y".into(), "x".into()])).is_ok());
    }
}
