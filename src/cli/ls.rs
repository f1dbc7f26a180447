//! `atlasfs ls STORE [DATASET]`: datasets, or one dataset's arrays as a table.

use super::{Result, open_store, print_out, shape_str, split_target, table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a directory, or a URL (file://, memory://, s3://, gs://, az://)
    pub store: String,
    /// List this dataset's arrays instead of the datasets
    pub dataset: Option<String>,
}

pub async fn run(args: Args) -> Result<()> {
    let atlas = open_store(&args.store).await?;
    let Some(dataset) = args.dataset else {
        let mut out = String::new();
        for d in atlas.list_datasets() {
            out.push_str(&d);
            out.push('\n');
        }
        return print_out(&out);
    };
    let (dataset, _) = split_target(&dataset, false)?;
    let meta = atlas.dataset_meta(&dataset).ok_or_else(|| atlasfs::Error::DatasetNotFound(dataset.clone()))?;
    let rows: Vec<Vec<String>> =
        meta.arrays.iter().map(|(name, s)| vec![name.clone(), s.dtype.name(), shape_str(&s.shape), shape_str(&s.chunk_shape), s.dimension_names.join(",")]).collect();
    print_out(&table(&["ARRAY", "DTYPE", "SHAPE", "CHUNKS", "DIMS"], &rows))
}
