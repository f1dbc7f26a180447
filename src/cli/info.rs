//! `atlasfs info STORE`: formats, counts and sizes.

use atlasfs::store::Codec;

use super::{Result, open_store, print_out, table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: a directory, or a URL (file://, memory://, s3://, gs://, az://)
    pub store: String,
}

pub fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Zstd => "zstd",
        Codec::Lz4 => "lz4",
        Codec::Uncompressed => "none",
    }
}

pub async fn run(args: Args) -> Result<()> {
    let atlas = open_store(&args.store).await?;
    let info = atlas.info().await?;
    let mut out = format!(
        "store:     {}\nmetadata:  {}\ncodec:     {}\ndatasets:  {}\narrays:    {}\n",
        info.location,
        info.meta_file,
        codec_name(info.codec),
        info.datasets,
        info.arrays.len()
    );
    if !info.arrays.is_empty() {
        let rows: Vec<Vec<String>> = info.arrays.iter().map(|a| vec![a.array.clone(), a.layers.to_string(), a.bytes.to_string(), a.entries.to_string()]).collect();
        out.push('\n');
        out.push_str(&table(&["ARRAY", "LAYERS", "BYTES", "ENTRIES"], &rows));
    }
    print_out(&out)
}
