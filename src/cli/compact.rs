//! `atlasfs compact STORE`: one layer per array file, deleted data dropped.

use atlasfs::store::progress;

use super::progress::Bar;
use super::{Result, open_store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a directory, or a URL (file://, memory://, s3://, gs://, az://)
    pub store: String,
}

pub async fn run(args: Args) -> Result<()> {
    let atlas = open_store(&args.store).await?;
    let bar = Bar::new();
    progress::scope(bar.sink(), atlas.compact_shared()).await?;
    bar.complete();
    bar.finish("compacted", bar.phase_total());
    Ok(())
}
