//! `atlasfs create STORE`: a new, empty store.

use atlasfs::store::{Codec, MetaFormat};
use atlasfs::{StoreConfig, StoreOptions};
use clap::ValueEnum;

use super::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CodecArg {
    Zstd,
    Lz4,
    #[value(alias = "uncompressed")]
    None,
}

impl From<CodecArg> for Codec {
    fn from(c: CodecArg) -> Codec {
        match c {
            CodecArg::Zstd => Codec::Zstd,
            CodecArg::Lz4 => Codec::Lz4,
            CodecArg::None => Codec::Uncompressed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetaFormatArg {
    Json,
    #[value(alias = "mp")]
    Msgpack,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create it (a directory is made if missing)
    pub store: String,
    /// Compression of array blocks
    #[arg(long, value_enum, default_value_t = CodecArg::Zstd)]
    pub codec: CodecArg,
    /// Encoding of the metadata file
    #[arg(long, value_enum, default_value_t = MetaFormatArg::Json)]
    pub meta_format: MetaFormatArg,
    /// Compression of the metadata file
    #[arg(long, value_enum, default_value_t = CodecArg::None)]
    pub meta_compression: CodecArg,
}

pub async fn run(args: Args) -> Result<()> {
    let config = StoreConfig {
        codec: args.codec.into(),
        meta_format: match args.meta_format {
            MetaFormatArg::Json => MetaFormat::Json,
            MetaFormatArg::Msgpack => MetaFormat::MsgPack,
        },
        meta_compression: args.meta_compression.into(),
    };
    let atlas = super::location(&args.store)?.create(config, StoreOptions::default()).await?;
    tracing::info!(store = atlas.location(), meta = atlas.meta_file().file_name(), "created");
    Ok(())
}
