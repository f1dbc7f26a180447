"""Rust -> Python, then Python writes on: atlas-python 0.10 reads atlasfs-written
stores, then keeps writing to one of them.

usage: compat_rs_read.py SNAPSHOT SNAPSHOT_EXPECT FINAL FINAL_EXPECT OUT_EXPECT

1. SNAPSHOT (before compaction: sidecars, tombstones, re-defined arrays) and FINAL
   (after atlasfs compacted it and wrote more) are opened with atlas-python and
   compared with the expectations atlasfs's test wrote: datasets, arrays, attributes,
   dtypes, shapes, chunks, dims, fills, every value, a partial read, stats.
2. atlas-python then opens FINAL, modifies it (writes over atlasfs-written chunks,
   deletes a shared array, adds an attribute and a new dataset) and flushes; it
   re-reads the store with a fresh handle, checks its own writes and that nothing
   else changed, and dumps the whole store to OUT_EXPECT for atlasfs to compare.
"""

import sys

from compat_common import (NAT, Model, atlas, bits_f64, check_store, dec_values, diff_values, dump_store, fail_if, gen, read_json,
                           write_json)

snap, snap_exp_path, final, final_exp_path, out = sys.argv[1:6]
assert atlas.__version__ == "0.10.0", atlas.__version__

snap_exp = read_json(snap_exp_path)
final_exp = read_json(final_exp_path)
errs = check_store(snap, snap_exp) + check_store(final, final_exp)
fail_if(errs, "atlas-python 0.10 reading atlasfs-written stores")

# ---- atlas-python writes on to the atlasfs-written store
kinds = {(ds, k): kind for ds, d in final_exp["data"].items() for k, kind, _ in d["attributes"]}
a = atlas.Atlas.open(final)
M = Model()
alpha = a.open_dataset("alpha")
touched = set()
for name in ("c_float64", "c_string", "c_uint16", "u_int8", "cube_u16"):
    e = final_exp["data"]["alpha"]["meta"][name]
    M.arrays[("alpha", name)] = [e["dtype"], dec_values(e["dtype"], e["values"], e["shape"])]
    touched.add(("alpha", name))
M.write(alpha, "c_float64", [0, 0], gen("float64", (2, 2), 100))  # read-modify-write of atlasfs chunks
M.write(alpha, "c_string", [3, 2], gen("string", (2, 3), 101))
M.write(alpha, "c_uint16", [1, 5], gen("uint16", (4, 2), 102))
M.write(alpha, "u_int8", [2], gen("int8", (3,), 103))
M.write(alpha, "cube_u16", [0, 0, 0], gen("uint16", (3, 1, 5), 104))
alpha.set_attribute("from_python", "yes")
kinds[("alpha", "from_python")] = "string"
alpha.set_attribute("count", 44)  # overwrite an atlasfs-written attribute
a.open_dataset("beta").delete_array("c_int32")  # shared with alpha: a tombstone
fp = a.create_dataset("from_python")
fp.set_attribute("when", 1_700_000_000_000_000_000, dtype="timestamp_ns")
kinds[("from_python", "when")] = "timestamp"
M.define(fp, "c_float64", "float64", ["x"], [3], [2], float("nan"))  # shares atlasfs's array file
M.define(fp, "py_string", "string", ["i"], [4], [3], None)
M.define(fp, "c_uint64", "uint64", ["a", "b"], [2, 3], [1, 2], 9)
M.define(fp, "py_ts", "timestamp_nanoseconds", ["t"], [5], [2], NAT)
M.write(fp, "c_float64", [1], gen("float64", (2,), 110))
M.write(fp, "py_string", [0], gen("string", (4,), 111))
M.write(fp, "c_uint64", [1, 0], gen("uint64", (1, 3), 112))
M.write(fp, "py_ts", [0], gen("timestamp_nanoseconds", (3,), 113))
a.flush()
a.close()
M.order.pop("alpha", None)
M.verify(final, "atlas-python reading back what it wrote into an atlasfs store")

dump = dump_store(final, kinds, "atlasfs-written, then written to by atlas-python")
dump["meta_file"] = final_exp["meta_file"]
dump["absent"] = final_exp.get("absent", []) + [["beta", "c_int32"]]
dump["absent_datasets"] = final_exp.get("absent_datasets", [])

def fill_number(f):
    return bits_f64(f["value"]) if f["kind"] == "float" else f["value"]


def same_fill(a, b):
    x, y = fill_number(a), fill_number(b)
    return x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)


# everything atlas-python did not touch must still read as atlasfs wrote it
errs = []
want_ds = final_exp["datasets"] + ["from_python"]
if dump["datasets"] != want_ds:
    errs.append(f"datasets {dump['datasets']}, expected {want_ds}")
for ds, d in final_exp["data"].items():
    for name, want in d["meta"].items():
        if (ds, name) == ("beta", "c_int32"):
            continue
        got = dump["data"][ds]["meta"].get(name)
        if got is None:
            errs.append(f"{ds}/{name} vanished")
            continue
        # atlas-python returns a fill as a plain number, so the dump guessed its
        # variant from the dtype; the variant is atlasfs's, as the expectations say.
        wf, gf = want["fill"], got["fill"]
        if (wf is None) != (gf is None) or (wf and not same_fill(wf, gf)):
            errs.append(f"{ds}/{name}: fill {gf}, expected {wf}")
        got["fill"] = wf
        if (ds, name) in touched:
            continue
        for k in ("dtype", "shape", "chunk_shape", "dims"):
            if got[k] != want[k]:
                errs.append(f"{ds}/{name}: {k} {got[k]}, expected {want[k]}")
        errs += [f"{ds}/{name}: {x}" for x in diff_values(want["dtype"], want["values"], got["values"], tuple(want["shape"]))]
        ws, gs = want["stats"], got["stats"]
        if (ws is None) != (gs is None) or (ws and (ws["row_count"], ws["null_count"]) != (gs["row_count"], gs["null_count"])):
            errs.append(f"{ds}/{name}: stats {gs}, expected {ws}")
fail_if(errs, "atlas-python writing to an atlasfs store changed data it did not touch")

write_json(out, dump)
print("ok")
