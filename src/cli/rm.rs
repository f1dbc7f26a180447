//! `atlasfs rm STORE DATASET[/ARRAY]`: delete a dataset or one array of it.

use super::{Result, open_store, split_target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a directory, or a URL (file://, memory://, s3://, gs://, az://)
    pub store: String,
    /// DATASET, or DATASET/ARRAY
    pub target: String,
}

pub async fn run(args: Args) -> Result<()> {
    let (dataset, array) = split_target(&args.target, false)?;
    let atlas = open_store(&args.store).await?;
    match &array {
        Some(a) => {
            let view = atlas.open_dataset(&dataset).await?;
            if view.array_meta(a).is_none() {
                return Err(atlasfs::Error::ArrayNotFound(format!("{a} (in dataset {dataset})")).into());
            }
            view.delete_array_shared(a).await?
        }
        None => atlas.delete_dataset_shared(&dataset).await?,
    }
    atlas.flush_shared().await?;
    Ok(())
}
