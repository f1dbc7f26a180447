#!/usr/bin/env bash
# Regenerates fuzz/seeds/<target>/: tiny real files for each fuzz target, written by
# numpy (.npy) and by the atlasfs CLI (layer files, data.stats, all six metadata
# variants, blocks of each codec). The seeds are committed; the corpora libFuzzer
# grows from them go to fuzz/corpus/ (ignored by git).
# Needs: target/release/atlasfs (cargo build --release) and the venv's numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${ATLASFS_BIN:-$PWD/target/release/atlasfs}
PY=${ATLASFS_PYTHON:-$PWD/.venv/bin/python}
S=$PWD/fuzz/seeds
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$S"
mkdir -p "$S"/{npy_header,footer,stats,meta,block}

"$PY" - "$S/npy_header" "$tmp" <<'PYEOF'
import os, sys
import numpy as np
d, tmp = sys.argv[1], sys.argv[2]
cases = {
    "f4_2d": np.arange(6, dtype="<f4").reshape(2, 3),
    "i8_0d": np.array(5, dtype="<i8"),
    "be_i2": np.arange(3, dtype=">i2"),
    "fortran_u2": np.asfortranarray(np.arange(6, dtype="<u2").reshape(2, 3)),
    "bool": np.array([True, False]),
    "U3": np.array(["ab", "c"]),
    "S2": np.array([b"ab", b"c"]),
    "M8ns": np.array([1, 2], dtype="M8[ns]"),
    "empty": np.zeros((0, 3), dtype="<f8"),
    "object": np.array([1, "x"], dtype=object),
    "complex": np.array([1j]),
    "struct": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
}
for name, a in cases.items():
    np.save(os.path.join(d, name + ".npy"), a, allow_pickle=True)
with open(os.path.join(d, "v2.npy"), "wb") as f:
    np.lib.format.write_array(f, np.arange(3, dtype="<i4"), version=(2, 0))
with open(os.path.join(d, "v3.npy"), "wb") as f:
    np.lib.format.write_array(f, np.arange(3, dtype="<i4"), version=(3, 0))
# inputs for the store seeds below
np.save(os.path.join(tmp, "f8.npy"), np.arange(6, dtype="<f8").reshape(2, 3))
np.save(os.path.join(tmp, "u.npy"), np.array(["x", "yz", ""]))
PYEOF

# The order of MetaFile::ALL: the meta target's first byte picks the variant.
metas=(atlas.json atlas.json.zst atlas.json.lz4 atlas.msgpack atlas.msgpack.zst atlas.msgpack.lz4)
for codec in zstd lz4 none; do
  for fmt in json msgpack; do
    for mc in none zstd lz4; do
      st="$tmp/s-$codec-$fmt-$mc"
      "$B" create "$st" --codec "$codec" --meta-format "$fmt" --meta-compression "$mc" >/dev/null
      "$B" put "$st" jan/t "$tmp/f8.npy" >/dev/null
      "$B" put "$st" feb/t "$tmp/f8.npy" --chunks 1,3 >/dev/null
      "$B" put "$st" jan/names "$tmp/u.npy" >/dev/null
      for k in "${!metas[@]}"; do
        if [ -f "$st/${metas[$k]}" ]; then
          { printf "\\x$(printf %02x "$k")"; cat "$st/${metas[$k]}"; } >"$S/meta/$codec-$fmt-${metas[$k]}"
        fi
      done
    done
  done
  # One store per block codec gives the layer, stats and block seeds.
  st="$tmp/s-$codec-json-none"
  cp "$st/t/data.1.af" "$S/footer/$codec-sidecar.af"
  cp "$st/names/data.1.af" "$S/footer/$codec-strings.af"
  cp "$st/t/data.stats" "$S/stats/$codec-t.stats"
  cp "$st/names/data.stats" "$S/stats/$codec-names.stats"
  "$B" compact "$st" >/dev/null
  cp "$st/t/data.af" "$S/footer/$codec-compacted.af"
  cp "$st/t/data.stats" "$S/stats/$codec-compacted.stats"
done

# Block seeds: [codec][dtype][u64 LE uncompressed size][the block's bytes], cut from
# compacted single-block layers (the block is everything before the footer).
"$PY" - "$tmp" "$S/block" <<'PYEOF'
import os, struct, sys
tmp, out = sys.argv[1], sys.argv[2]
codec_byte = {"none": 0, "zstd": 1, "lz4": 2}
for codec, cb in codec_byte.items():
    for arr, dtype_byte, raw_len in [("t", 0, 96), ("names", 1, 4 * 4 + 3)]:
        with open(os.path.join(tmp, f"s-{codec}-json-none", arr, "data.af"), "rb") as f:
            b = f.read()
        (footer_len,) = struct.unpack("<Q", b[-12:-4])
        block = b[: len(b) - 12 - footer_len]
        with open(os.path.join(out, f"{codec}-{arr}"), "wb") as f:
            f.write(bytes([cb, dtype_byte]) + struct.pack("<Q", raw_len) + block)
PYEOF
echo "fuzz seeds: $(find "$S" -type f | wc -l) files, $(du -sk "$S" | cut -f1) KiB in $S"
