//! The `atlasfs` binary end to end: every subcommand against a real store
//! directory, with numpy making the inputs and checking the outputs, and every
//! bad input refused with one line on stderr and the store left byte-identical.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use atlasfs::fs::npy;

fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(common::python)
}

/// Runs Python code (numpy imported as np) with `sys.argv[1:] = args`; returns stdout.
fn py(code: &str, args: &[&str]) -> String {
    let script = format!("import sys, os\nimport numpy as np\n{code}");
    let out = Command::new(python()).arg("-c").arg(script).args(args).output().expect("spawn python");
    assert!(out.status.success(), "python failed:\n{code}\n--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn atlasfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atlasfs")).args(args).env_remove("RUST_LOG").output().expect("spawn atlasfs")
}

/// Runs a command that must succeed; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = atlasfs(args);
    assert!(out.status.success(), "atlasfs {args:?} failed ({:?}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs a command that must fail with one `atlasfs: error:` line mentioning `needle`.
fn fails(args: &[&str], needle: &str) -> String {
    let out = atlasfs(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "atlasfs {args:?} succeeded; stdout:\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "atlasfs {args:?} failed but printed to stdout");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "atlasfs {args:?}: expected one stderr line, got:\n{err}");
    assert!(lines[0].starts_with("atlasfs: error: "), "atlasfs {args:?}: {err}");
    assert!(err.to_lowercase().contains(&needle.to_lowercase()), "atlasfs {args:?}: error does not mention {needle:?}: {err}");
    err
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.strip_prefix(dir).unwrap().join(""), vec![]);
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Inputs made by numpy: name → array. Each is saved as `<name>.npy`, plus its
/// canonical form (C order, little-endian; strings as `<U`) as `<name>.want.npy`.
const INPUTS: &str = r#"
out = sys.argv[1]
rng = np.random.default_rng(7)
f4 = rng.standard_normal((4, 6)).astype('<f4'); f4[1, 2] = np.nan
u = np.array([['héllo', ''], ['日本語', 'x'], ['a\x00b', 'zz']])
arrays = {
    'f4_2d': f4,
    'f8_3d_fortran': np.asfortranarray(rng.standard_normal((3, 4, 5))),
    'i4_be': (np.arange(15).reshape(3, 5) - 7).astype('>i4'),
    'i2_be_fortran': np.asfortranarray((np.arange(24).reshape(2, 3, 4) * 1000 - 9000).astype('>i2')),
    'f8_be': np.array([1.5, -2.25, np.inf, -0.0], dtype='>f8'),
    'u1': np.array([0, 1, 255], dtype='u1'),
    'u2': np.array([[0, 65535], [7, 8]], dtype='<u2'),
    'u4_be': np.array([0, 4294967295, 12], dtype='>u4'),
    'u8': np.array([0, 2**64 - 1], dtype='<u8'),
    'i1': np.array([-128, 0, 127], dtype='i1'),
    'i8': np.array([-2**63, 0, 2**63 - 1], dtype='<i8'),
    'bool': np.array([[True, False, True], [False, False, True]]),
    'bool_fortran': np.asfortranarray(np.array([[True, False, True], [False, False, True]])),
    'dt': np.array(['2020-01-01T00:00:00.123456789', 'NaT', '1970-01-01'], dtype='datetime64[ns]'),
    'dt_be': np.array(['2001-09-09T01:46:40', 'NaT'], dtype='>M8[ns]'),
    'scalar': np.array(3.5),
    'scalar_i4': np.array(-4, dtype='<i4'),
    'empty': np.zeros((0, 4), dtype='<f4'),
    'ustr': u,
    'ustr_fortran': np.asfortranarray(u),
    'ustr_be': u.astype('>U5'),
    'ustr_empty': np.array(['', '', '']),
    'bstr': np.array([b'ab', b'', b'xyz\x00']),
    'long': np.arange(100_000, dtype='<i8'),
}
for name, a in arrays.items():
    np.save(os.path.join(out, name + '.npy'), a)
    if a.dtype.kind == 'S':
        want = np.char.decode(a, 'utf-8')
    else:
        want = np.array(a, order='C').astype(a.dtype.newbyteorder('<'), order='C')
    if want.dtype.kind == 'U':
        width = max([1] + [len(x) for x in want.ravel().tolist()])
        want = want.astype('<U%d' % width)
    np.save(os.path.join(out, name + '.want.npy'), want)
print('\n'.join(arrays))
"#;

/// Checks `<name>.got.npy` against `<name>.npy` / `<name>.want.npy` for each name.
const VERIFY: &str = r#"
d = sys.argv[1]
for name in sys.argv[2:]:
    a = np.load(os.path.join(d, name + '.npy'))
    want = np.load(os.path.join(d, name + '.want.npy'))
    got = np.load(os.path.join(d, name + '.got.npy'))
    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
    assert got.shape == a.shape, (name, got.shape, a.shape)
    if a.dtype.kind == 'S':
        a = np.char.decode(a, 'utf-8')
    nan = a.dtype.kind in 'fcmM'
    assert np.array_equal(got, a, equal_nan=nan), (name, got, a)
    if a.dtype.kind == 'f':
        assert np.array_equal(np.signbit(got), np.signbit(a)), name
    with open(os.path.join(d, name + '.got.npy'), 'rb') as f1, open(os.path.join(d, name + '.want.npy'), 'rb') as f2:
        assert f1.read() == f2.read(), ('not byte-identical to np.save', name)
print('ok')
"#;

#[test]
fn headers_are_byte_identical_to_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let listing = py(
        r#"
out = sys.argv[1]
cases = [('<f4', (4, 6)), ('<f8', ()), ('|b1', (5,)), ('<U3', (2,)), ('<f8', (0, 10**12)), ('|u1', (1,) * 20),
         ('<M8[ns]', (1, 2, 3)), ('<i8', (10**15, 0)), ('<i2', (2,) * 16), ('<U1000', (0,)), ('|i1', (0,) * 64),
         ('<u8', (7, 11, 13))] + [('<f4', (1,) * r) for r in range(40)] + [('<f4', (10**k, 0)) for k in range(19)]
for i, (descr, shape) in enumerate(cases):
    np.save(os.path.join(out, '%d.npy' % i), np.zeros(shape, dtype=descr))
    print(i, descr, ','.join(map(str, shape)))
"#,
        &[s(dir.path())],
    );
    let mut n = 0;
    for line in listing.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let shape: Vec<usize> = parts[2].split(',').filter(|x| !x.is_empty()).map(|x| x.parse().unwrap()).collect();
        let file = std::fs::read(dir.path().join(format!("{}.npy", parts[0]))).unwrap();
        let ours = npy::header_bytes(parts[1], &shape);
        assert_eq!(&file[..ours.len()], &ours[..], "{line}:\nnumpy: {:?}\nours:  {:?}", String::from_utf8_lossy(&file[..ours.len()]), String::from_utf8_lossy(&ours));
        let h = npy::parse(&file).unwrap();
        assert_eq!((h.descr.as_str(), h.shape.as_slice(), h.header_len), (parts[1], &shape[..], ours.len()));
        n += 1;
    }
    assert!(n > 60);
}

#[test]
fn put_get_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let names: Vec<String> = py(INPUTS, &[s(&data)]).lines().map(str::to_string).collect();
    assert!(names.len() > 20);
    ok(&["create", s(&store)]);
    for name in &names {
        let input = data.join(format!("{name}.npy"));
        let got = data.join(format!("{name}.got.npy"));
        let target = format!("ds/{name}");
        let mut args = vec!["put", s(&store), &target, s(&input)];
        if name == "long" {
            args.extend(["--chunks", "999"]);
        }
        ok(&args);
        ok(&["get", s(&store), &target, "-o", s(&got)]);
    }
    let mut args = vec![s(&data)];
    args.extend(names.iter().map(String::as_str));
    assert_eq!(py(VERIFY, &args).trim(), "ok");

    // stdout gives the same bytes as -o.
    for name in ["f4_2d", "ustr", "scalar", "empty"] {
        let out = atlasfs(&["get", s(&store), &format!("ds/{name}")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, std::fs::read(data.join(format!("{name}.got.npy"))).unwrap(), "{name}");
    }

    // A reopened store still has everything (the put flushed).
    let listed = ok(&["ls", s(&store), "ds"]);
    for name in &names {
        assert!(listed.lines().any(|l| l.split_whitespace().next() == Some(name)), "{name} missing from:\n{listed}");
    }
}

#[test]
fn ls_shows_datasets_and_array_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let f = tmp.path().join("t.npy");
    let st = tmp.path().join("names.npy");
    py("np.save(sys.argv[1], np.zeros((4, 6, 3), dtype='<f4')); np.save(sys.argv[2], np.array(['a', 'bc']))", &[s(&f), s(&st)]);
    ok(&["create", s(&store)]);
    assert_eq!(ok(&["ls", s(&store)]), "");
    ok(&["put", s(&store), "run-b/temperature", s(&f), "--chunks", "2,3,3", "--dims", "lat,lon,time"]);
    ok(&["put", s(&store), "run-a/temperature", s(&f)]);
    ok(&["put", s(&store), "run-b/station", s(&st)]);
    assert_eq!(ok(&["ls", s(&store)]), "run-b\nrun-a\n");
    let table = ok(&["ls", s(&store), "run-b"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["ARRAY", "DTYPE", "SHAPE", "CHUNKS", "DIMS"]);
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["temperature", "float32", "(4,", "6,", "3)", "(2,", "3,", "3)", "lat,lon,time"]);
    assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["station", "string", "(2,)", "(2,)", "dim_0"]);
    // Columns line up.
    let col = lines[0].find("DTYPE").unwrap();
    assert!(lines[1..].iter().all(|l| l[col - 2..col].trim().is_empty() && !l[col..].starts_with(' ')), "{table}");
    let a = ok(&["ls", s(&store), "run-a"]);
    assert!(a.contains("dim_0,dim_1,dim_2") && a.contains("(4, 6, 3)"), "{a}");
}

fn info_rows(store: &Path) -> BTreeMap<String, (usize, u64, usize)> {
    let out = ok(&["info", s(store)]);
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() == Some(&"ARRAY") {
            in_table = true;
        } else if in_table && w.len() == 4 {
            rows.insert(w[0].to_string(), (w[1].parse().unwrap(), w[2].parse().unwrap(), w[3].parse().unwrap()));
        }
    }
    rows
}

fn info_field(store: &Path, key: &str) -> String {
    let out = ok(&["info", s(store)]);
    out.lines().find_map(|l| l.strip_prefix(&format!("{key}:")).map(|v| v.trim().to_string())).unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn replace_rm_compact_info() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let d = tmp.path();
    py("np.save(sys.argv[1] + '/a.npy', np.arange(24, dtype='<f4').reshape(4, 6)); np.save(sys.argv[1] + '/b.npy', np.array([7, 8, 9], dtype='<i2'))", &[s(d)]);
    let (a, b) = (d.join("a.npy"), d.join("b.npy"));
    ok(&["create", s(&store)]);
    assert_eq!(info_field(&store, "datasets"), "0");
    assert_eq!(info_field(&store, "metadata"), "atlas.json");
    assert_eq!(info_field(&store, "codec"), "zstd");
    ok(&["put", s(&store), "one/x", s(&a)]);
    ok(&["put", s(&store), "two/x", s(&a), "--chunks", "2,2"]);
    ok(&["put", s(&store), "one/x", s(&b)]); // replace with another dtype and shape
    ok(&["get", s(&store), "one/x", "-o", s(&d.join("one_x.npy"))]);
    ok(&["get", s(&store), "two/x", "-o", s(&d.join("two_x.npy"))]);
    assert_eq!(std::fs::read(d.join("one_x.npy")).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(std::fs::read(d.join("two_x.npy")).unwrap(), std::fs::read(&a).unwrap());
    assert!(ok(&["ls", s(&store), "one"]).contains("int16"));
    assert_eq!(info_field(&store, "datasets"), "2");

    let before = info_rows(&store);
    let (layers, _, entries) = before["x"];
    assert!(layers >= 2, "{before:?}");
    assert_eq!(entries, 2);
    ok(&["compact", s(&store)]);
    let after = info_rows(&store);
    assert_eq!(after["x"].0, 1, "{after:?}");
    assert_eq!(after["x"].2, 2);
    ok(&["get", s(&store), "one/x", "-o", s(&d.join("one_x2.npy"))]);
    assert_eq!(std::fs::read(d.join("one_x2.npy")).unwrap(), std::fs::read(&b).unwrap());

    ok(&["rm", s(&store), "one/x"]);
    assert_eq!(ok(&["ls", s(&store), "one"]).lines().count(), 1); // just the header
    fails(&["get", s(&store), "one/x"], "array not found");
    ok(&["rm", s(&store), "two"]);
    assert_eq!(ok(&["ls", s(&store)]), "one\n");
    fails(&["ls", s(&store), "two"], "dataset not found");
    ok(&["compact", s(&store)]);
    assert_eq!(info_field(&store, "datasets"), "1");
    assert_eq!(info_field(&store, "arrays"), "0");
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    snapshot(dir).values().map(|b| b.len() as u64).sum()
}

/// An array deleted from every dataset by one `rm` is reclaimed by a later
/// `compact` in another process, as a compaction through a mount reclaims it.
#[test]
fn compact_reclaims_an_array_deleted_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let d = tmp.path();
    py("np.save(sys.argv[1] + '/x.npy', np.random.default_rng(1).random(200_000)); np.save(sys.argv[1] + '/y.npy', np.arange(10))", &[s(d)]);
    ok(&["create", s(&store)]);
    ok(&["put", s(&store), "d1/x", s(&d.join("x.npy"))]);
    ok(&["put", s(&store), "d1/y", s(&d.join("y.npy"))]);
    assert!(dir_bytes(&store.join("x")) > 1_000_000, "x is stored: {}", dir_bytes(&store.join("x")));
    ok(&["rm", s(&store), "d1/x"]);
    ok(&["compact", s(&store)]);
    let left = dir_bytes(&store.join("x"));
    assert!(left < 4096, "x/ still holds {left} bytes after compact: {:?}", snapshot(&store.join("x")).keys().collect::<Vec<_>>());
    let y = d.join("y2.npy");
    ok(&["get", s(&store), "d1/y", "-o", s(&y)]);
    assert_eq!(std::fs::read(&y).unwrap(), std::fs::read(d.join("y.npy")).unwrap());
}

/// `put` without `--chunks` chunks as the mount does: whole rows, about 4 MiB.
#[test]
fn put_chunks_automatically() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let f = tmp.path().join("big.npy");
    py("np.save(sys.argv[1], np.arange(1000 * 2000, dtype='<f8').reshape(1000, 2000))", &[s(&f)]);
    ok(&["create", s(&store)]);
    ok(&["put", s(&store), "d/big", s(&f)]);
    let table = ok(&["ls", s(&store), "d"]);
    assert!(table.contains("(1000, 2000)  (262, 2000)"), "{table}");
    let got = tmp.path().join("got.npy");
    ok(&["get", s(&store), "d/big", "-o", s(&got)]);
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&f).unwrap());
}

#[test]
fn create_options() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("nested/dir/s");
    let f = tmp.path().join("a.npy");
    py("np.save(sys.argv[1], np.linspace(0, 1, 50).reshape(5, 10))", &[s(&f)]);
    ok(&["create", s(&store), "--codec", "lz4", "--meta-format", "msgpack", "--meta-compression", "zstd"]);
    assert!(store.join("atlas.msgpack.zst").is_file());
    assert_eq!(info_field(&store, "metadata"), "atlas.msgpack.zst");
    assert_eq!(info_field(&store, "codec"), "lz4");
    ok(&["put", s(&store), "d/a", s(&f), "--chunks", "2,5"]);
    let got = tmp.path().join("got.npy");
    ok(&["get", s(&store), "d/a", "-o", s(&got)]);
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&f).unwrap());

    let url = format!("file://{}", tmp.path().join("u").display());
    ok(&["create", &url, "--codec", "none", "--meta-format", "json", "--meta-compression", "lz4"]);
    assert!(tmp.path().join("u/atlas.json.lz4").is_file());
    ok(&["put", &url, "d/a", s(&f)]);
    assert_eq!(ok(&["ls", &url]), "d\n");
    assert_eq!(info_field(&tmp.path().join("u"), "codec"), "none");

    let snap = snapshot(&store);
    let err = fails(&["create", s(&store)], "already exists");
    assert!(err.contains(&format!("a store already exists at {} (atlas.msgpack.zst present)", s(&store))), "the path is named: {err}");
    let err = fails(&["create", &url], "already exists");
    assert!(err.contains(&format!("a store already exists at {} (atlas.json.lz4 present)", tmp.path().join("u").display())), "the location is named: {err}");
    assert_eq!(snapshot(&store), snap);
    let other = tmp.path().join("other");
    fails(&["create", s(&other), "--codec", "gzip"], "gzip");
    assert!(!other.exists());
}

/// Writes the bad inputs; returns (file, expected error text) pairs.
fn bad_inputs(d: &Path) -> Vec<(PathBuf, &'static str)> {
    py(
        r#"
d = sys.argv[1]
np.save(d + '/complex.npy', np.array([1 + 2j, 3j]))
np.save(d + '/complex64.npy', np.array([1 + 2j], dtype='c8'))
np.save(d + '/object.npy', np.array([{'a': 1}, None], dtype=object), allow_pickle=True)
np.save(d + '/f16.npy', np.array([1, 2], dtype='f2'))
np.save(d + '/structured.npy', np.zeros(3, dtype=[('a', '<i4'), ('b', '<f8')]))
np.save(d + '/dt_s.npy', np.array(['2020-01-01'], dtype='datetime64[s]'))
np.save(d + '/td.npy', np.array([1], dtype='timedelta64[ns]'))
np.save(d + '/good.npy', np.arange(12, dtype='<f8').reshape(3, 4))
np.save(d + '/nonutf8.npy', np.array([b'\xff\xfe']))
g = open(d + '/good.npy', 'rb').read()
open(d + '/short_payload.npy', 'wb').write(g[:-5])
open(d + '/short_header.npy', 'wb').write(g[:40])
open(d + '/trailing.npy', 'wb').write(g + b'\0\0\0')
open(d + '/garbage.npy', 'wb').write(b'this is not a numpy file at all')
open(d + '/empty.npy', 'wb').write(b'')
open(d + '/badversion.npy', 'wb').write(g[:6] + b'\x09\x00' + g[8:])
h = g[:10] + g[10:128].replace(b"'shape': (3, 4)", b"'shape': [3, 4]")
open(d + '/baddict.npy', 'wb').write(h + g[128:])
"#,
        &[s(d)],
    );
    let mut absurd = npy::header_bytes("<f8", &[1 << 40, 1 << 40]);
    absurd.extend_from_slice(&[0; 64]);
    std::fs::write(d.join("absurd.npy"), absurd).unwrap();
    let mut huge = npy::header_bytes("<f8", &[1 << 31, 1 << 31]);
    huge.extend_from_slice(&[0; 64]);
    std::fs::write(d.join("huge.npy"), huge).unwrap();
    [
        ("complex", "complex"),
        ("complex64", "complex"),
        ("object", "object"),
        ("f16", "float16"),
        ("structured", "structured"),
        ("dt_s", "[ns]"),
        ("td", "timedelta"),
        ("nonutf8", "utf-8"),
        ("short_payload", "truncated"),
        ("short_header", "truncated"),
        ("trailing", "after the array data"),
        ("garbage", "not a .npy file"),
        ("empty", "truncated"),
        ("badversion", "version 9.0"),
        ("baddict", "shape is not a tuple"),
        ("absurd", "too large"),
        ("huge", "too large"),
    ]
    .into_iter()
    .map(|(n, e)| (d.join(format!("{n}.npy")), e))
    .collect()
}

#[test]
fn bad_input_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let d = tmp.path().join("in");
    std::fs::create_dir(&d).unwrap();
    let bad = bad_inputs(&d);
    let good = d.join("good.npy");
    ok(&["create", s(&store)]);
    ok(&["put", s(&store), "ds/a", s(&good)]);
    let snap = snapshot(&store);
    let st = s(&store);
    let unchanged = |what: &str| assert!(snapshot(&store) == snap, "{what} changed the store");

    for (file, msg) in &bad {
        // Into a new array, a new dataset, and over the existing array.
        for target in ["ds/b", "new/a", "ds/a"] {
            let err = fails(&["put", st, target, s(file)], msg);
            assert!(err.contains(s(file)), "the error names the file: {err}");
            unchanged(&format!("put {target} {}", file.display()));
        }
    }
    // A chunk over 4 GiB is refused from the header alone (sparse file).
    let big = d.join("big.npy");
    let header = npy::header_bytes("<f4", &[(1 << 30) + 1]);
    std::fs::write(&big, &header).unwrap();
    std::fs::OpenOptions::new().write(true).open(&big).unwrap().set_len(header.len() as u64 + 4 * ((1 << 30) + 1)).unwrap();
    fails(&["put", st, "ds/big", s(&big), "--chunks", "1073741825"], "more than a chunk can (4 GiB)");
    unchanged("put of an oversized single chunk");
    let missing = d.join("no-such.npy");
    fails(&["put", st, "ds/a", s(&missing)], "no-such.npy");
    // Names.
    for (target, msg) in [
        ("_x/a", "invalid name"),
        ("ds/_a", "invalid name"),
        ("ds/a/b", "invalid name"),
        ("ds/", "invalid name"),
        ("/a", "invalid name"),
        ("ds", "DATASET/ARRAY"),
        ("..", "invalid name"),
    ] {
        fails(&["put", st, target, s(&good)], msg);
        fails(&["get", st, target], msg);
        unchanged(&format!("put {target}"));
    }
    fails(&["rm", st, "_x"], "invalid name");
    fails(&["ls", st, "_x"], "invalid name");
    // Geometry.
    fails(&["put", st, "ds/a", s(&good), "--chunks", "2"], "--chunks");
    fails(&["put", st, "ds/a", s(&good), "--chunks", "2,0"], "chunk size 0");
    fails(&["put", st, "ds/a", s(&good), "--chunks", "2,x"], "invalid");
    fails(&["put", st, "ds/a", s(&good), "--dims", "x"], "--dims");
    fails(&["put", st, "ds/a", s(&good), "--dims", "x,x"], "twice");
    fails(&["put", st, "ds/a", s(&good), "--chunks", "1,4294967296"], "more than a chunk can (4 GiB)");
    unchanged("geometry errors");
    // Missing things.
    fails(&["get", st, "ds/zz"], "array not found");
    fails(&["get", st, "zz/a"], "dataset not found");
    fails(&["rm", st, "ds/zz"], "array not found");
    fails(&["rm", st, "zz"], "dataset not found");
    fails(&["ls", st, "zz"], "dataset not found");
    fails(&["create", st], "already exists");
    unchanged("missing names");
    // Usage.
    fails(&["put", st, "ds/a"], "required");
    fails(&["frobnicate", st], "frobnicate");
    fails(&["get", st, "ds/a", "--bogus"], "--bogus");
    unchanged("usage errors");

    // Unknown stores: nothing is created.
    let nowhere = tmp.path().join("nowhere");
    for args in [
        vec!["ls", s(&nowhere)],
        vec!["info", s(&nowhere)],
        vec!["compact", s(&nowhere)],
        vec!["put", s(&nowhere), "ds/a", s(&good)],
        vec!["get", s(&nowhere), "ds/a"],
        vec!["rm", s(&nowhere), "ds"],
    ] {
        fails(&args, "no atlas store");
        assert!(!nowhere.exists(), "{args:?} created the directory");
    }
    // An existing directory that is not a store is not turned into one.
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::write(plain.join("notes.txt"), "hello").unwrap();
    let plain_snap = snapshot(&plain);
    fails(&["put", s(&plain), "ds/a", s(&good)], "no atlas store");
    fails(&["ls", s(&plain)], "no atlas store");
    assert_eq!(snapshot(&plain), plain_snap);
    fails(&["ls", "ftp://example.com/x"], "unknown scheme");

    // After all that, the store still reads back.
    let got = tmp.path().join("got.npy");
    ok(&["get", st, "ds/a", "-o", s(&got)]);
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&good).unwrap());
    assert_eq!(ok(&["ls", st]), "ds\n");
}

#[test]
fn logging_goes_to_stderr_and_follows_rust_log() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    ok(&["create", s(&store)]);
    let out = Command::new(env!("CARGO_BIN_EXE_atlasfs")).args(["ls", s(&store)]).env("RUST_LOG", "debug").output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "logs leaked into stdout");
    let quiet = atlasfs(&["ls", s(&store)]);
    assert!(quiet.stderr.is_empty(), "default level is warn: {}", String::from_utf8_lossy(&quiet.stderr));
}

#[test]
fn atlas_python_reads_what_the_cli_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let f = tmp.path().join("a.npy");
    let names = tmp.path().join("n.npy");
    py("np.save(sys.argv[1], np.arange(30, dtype='<f8').reshape(5, 6)); np.save(sys.argv[2], np.array(['x', 'yz']))", &[s(&f), s(&names)]);
    ok(&["create", s(&store)]);
    ok(&["put", s(&store), "ds/a", s(&f), "--chunks", "2,4", "--dims", "y,x"]);
    ok(&["put", s(&store), "ds/n", s(&names)]);
    let out = py(
        r#"
import atlas
a = atlas.Atlas.open(sys.argv[1])
ds = a.open_dataset('ds')
x = ds.read_array('a')
assert np.array_equal(x, np.arange(30, dtype='<f8').reshape(5, 6)), x
assert ds.array_meta('a')['dimension_names'] == ['y', 'x']
assert list(ds.read_array('n')) == ['x', 'yz']
print('ok')
"#,
        &[s(&store)],
    );
    assert_eq!(out.trim(), "ok");
}
