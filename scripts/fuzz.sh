#!/usr/bin/env bash
# Fuzzes the decoders of untrusted bytes with cargo-fuzz (libFuzzer): the .npy
# header parser, layer footers, data.stats, the six metadata variants, and block
# decompression with chunk decoding. See fuzz/fuzz_targets/*.rs.
#
#   scripts/fuzz.sh --smoke            every target for 12 s (the test suite runs this)
#   scripts/fuzz.sh --secs 600         every target for 10 minutes
#   scripts/fuzz.sh --secs 3600 meta   one target for an hour
#   options: --sanitizer none|address  (default none: ~3x the execs/s; address also
#                                       checks the C zstd code and honours -malloc_limit_mb)
#
# A crash, a panic, a timeout (one input over 10 s), RSS over 2 GiB, or any single
# allocation over 256 MiB (-malloc_limit_mb, and the targets' own allocator for
# builds without a sanitizer) fails the run; the input is saved under
# fuzz/artifacts/<target>/ and the line to replay it is printed.
# Corpora grow in fuzz/corpus/<target>/ (not in git) from the committed fuzz/seeds/.
#
# Toolchain: `cargo +nightly` if installed, else stable with RUSTC_BOOTSTRAP=1
# (FUZZ_TOOLCHAIN=stable forces that). The first build instruments the whole crate
# and its dependencies (~4.5 min on 2 cores); later ones rebuild atlasfs only (~1 min).
# Needs cargo-fuzz (scripts/setup-test-env.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=12
sanitizer=none
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) secs=12 ;;
    --secs) secs="$2"; shift ;;
    --sanitizer) sanitizer="$2"; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
all=(npy_header footer stats meta block)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

command -v cargo-fuzz >/dev/null || { echo "fuzz.sh: cargo-fuzz is not installed: run scripts/setup-test-env.sh (cargo install cargo-fuzz --locked)" >&2; exit 1; }
# FUZZ_TOOLCHAIN=stable forces the fallback (to check it on a machine with nightly).
if [ "${FUZZ_TOOLCHAIN:-}" != stable ] && cargo +nightly --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

# Longest input per target: big enough for the seeds, small enough that what the
# decoders may honestly allocate stays under the 256 MiB limit (a zstd byte can
# stand for 32 KiB).
max_len() {
  case "$1" in
    meta) echo 4096 ;;
    block) echo 2048 ;;
    *) echo 65536 ;;
  esac
}

export CARGO_TARGET_DIR="$PWD/fuzz/target"
cd fuzz
start=$(date +%s)
# Builds every target (the main crate with coverage instrumentation, in fuzz/target).
blog=$(mktemp)
if ! "${fuzz[@]}" build --sanitizer "$sanitizer" >"$blog" 2>&1; then
  tail -n 40 "$blog"
  rm -f "$blog"
  echo "test result: FAILED. 0 passed; ${#targets[@]} failed; 0 ignored; 0 measured; 0 filtered out; finished in $(($(date +%s) - start))s (cargo fuzz build failed)"
  exit 1
fi
rm -f "$blog"
triple=$(rustc -vV | sed -n 's/^host: //p')
bindir="$CARGO_TARGET_DIR/$triple/release"
echo "fuzz: built in $(($(date +%s) - start)) s ($sanitizer sanitizer, ${fuzz[*]}); ${secs} s per target"

passed=0
failed=0
failures=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  set +e
  "$bindir/$t" "corpus/$t" "seeds/$t" \
    -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz $t: ok, ${runs:-?} runs in ${secs} s (${rate:-?}/s), coverage ${cov:-?}, corpus $(find "corpus/$t" -type f | wc -l) files"
  else
    failed=$((failed + 1))
    failures+=("$t")
    echo "fuzz $t: FAILED (exit $rc)"
    grep -E 'panicked|ERROR: libFuzzer|==fuzz==|SUMMARY|Test unit written|^    at |^  [0-9]+: atlasfs' "$log" | head -40 | sed 's/^/  /'
    for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
      echo "  replay: cd fuzz && ${fuzz[*]} run --sanitizer $sanitizer $t $a"
    done
  fi
  rm -f "$log"
done
# One line in the format of cargo test's summaries, so scripts/test.sh counts the targets.
if [ "$failed" -eq 0 ]; then res=ok; else res=FAILED; fi
echo "test result: $res. $passed passed; $failed failed; 0 ignored; 0 measured; 0 filtered out; finished in $(($(date +%s) - start))s (cargo fuzz: ${targets[*]})"
[ "$failed" -eq 0 ] || { echo "fuzz: failing targets: ${failures[*]}" >&2; exit 1; }
