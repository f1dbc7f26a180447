//! `atlasfs compact STORE`: one layer per array file, deleted data dropped.

use super::{Result, open_store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a directory, or a URL (file://, memory://, s3://, gs://, az://)
    pub store: String,
}

pub async fn run(args: Args) -> Result<()> {
    let atlas = open_store(&args.store).await?;
    atlas.compact_shared().await?;
    Ok(())
}
