"""Python -> Rust: atlas-python 0.10 writes a store, reads it back, dumps expectations.

usage: compat_py_write.py STORE CODEC META_FORMAT META_COMPRESSION EXPECT_JSON

The store goes through four flushes (so sidecars data.N.af exist), deletes of an
array and of a dataset, a compact(), and more writes after it. Every array is then
read back with a fresh atlas-python handle, checked against a model of what was
written, and dumped (values, dtype, shape, chunks, dims, fill, stats, attributes,
dataset order) for the Rust side to compare with what atlasfs reads.
"""

import math
import sys

from compat_common import DTYPES, NAT, Model, atlas, dump_store, gen, meta_file_name, write_json

store, codec, fmt, comp, out = sys.argv[1:6]
assert atlas.__version__ == "0.10.0", atlas.__version__

# Fills of the chunked arrays: in range, some at the type's edge.
C_FILL = {
    "uint8": 200, "uint16": 65535, "uint32": 7, "uint64": 2 ** 64 - 1,
    "int8": -128, "int16": -1, "int32": -(2 ** 31), "int64": 2 ** 63 - 1,
    "float32": float("nan"), "float64": float("nan"),
    "timestamp_nanoseconds": NAT, "string": "zz",
}
# Fills of the unchunked arrays: None for most (the default 0 / "" applies).
U_FILL = {"uint32": 3, "int64": -9, "float32": 1.5, "float64": 3, "timestamp_nanoseconds": 5}

a = atlas.Atlas.create(store, codec=codec, meta_format=fmt, meta_compression=comp)
M = Model()
kinds = {}


def attr(view, key, value, kind, hint=None):
    if hint is None:
        view.set_attribute(key, value)
    else:
        view.set_attribute(key, value, dtype=hint)
    kinds[(view.name, key)] = kind


alpha = a.create_dataset("alpha")
beta = a.create_dataset("beta")
gamma = a.create_dataset("gamma")
delta = a.create_dataset("delta")

attr(alpha, "flag", True, "bool")
attr(alpha, "count", 42, "int")
attr(alpha, "neg", -7, "int")
attr(alpha, "big", 2 ** 63 - 1, "int")
attr(alpha, "small", -(2 ** 63), "int")
attr(alpha, "ratio", 0.1, "float")
attr(alpha, "whole", 2.0, "float")
attr(alpha, "pi", math.pi, "float")
attr(alpha, "tiny", 5e-324, "float")
attr(alpha, "huge", 1.7976931348623157e308, "float")
attr(alpha, "name", "KNMI — station ü", "string")
attr(alpha, "empty", "", "string")
attr(alpha, "created", 1_700_000_000_123_456_789, "timestamp", hint="timestamp_ns")
attr(alpha, "epochish", -1_500_000_000, "timestamp", hint="timestamp_ns")
# An RFC 3339-looking string is stored as a string but reloads as a timestamp (§1.5).
attr(alpha, "ts_like", "2023-11-14T22:13:20Z", "timestamp")
attr(alpha, "narrow", 500, "int", hint="int8")  # widened, no range check
attr(alpha, "narrowf", 0.1, "float", hint="float32")
attr(alpha, "off", False, "bool")
if fmt == "msgpack":  # JSON metadata cannot hold these (written as null)
    attr(alpha, "nan_attr", float("nan"), "float")
    attr(alpha, "ninf_attr", float("-inf"), "float")
attr(beta, "idx", 1, "int")
attr(beta, "label", "beta", "string")
attr(gamma, "doomed", True, "bool")

for dt in DTYPES:
    M.define(alpha, f"c_{dt}", dt, ["row", "col"], [5, 7], [2, 3], C_FILL[dt])  # edge chunks both ways
    M.define(alpha, f"u_{dt}", dt, ["t"], [6], None, U_FILL.get(dt))
    M.define(alpha, f"z_{dt}", dt, [], [], None, None)
M.define(alpha, "never_written", "float32", ["x"], [3], [2], float("nan"))
M.define(alpha, "z_unwritten", "int16", [], [], None, 11)
M.define(alpha, "cube", "int32", ["a", "b", "c"], [3, 4, 5], [2, 3, 4], -1)
M.define(beta, "c_float64", "float64", ["y", "x"], [4, 4], [3, 3], -1.5)
M.define(beta, "c_int32", "int32", ["i"], [3], [2], None)
M.define(beta, "mixed", "int16", ["i"], [5], [5], None)
M.define(beta, "c_float32", "float32", ["a", "b"], [2, 2], [1, 1], float("nan"))
M.define(gamma, "c_float64", "float64", ["p", "q"], [3, 3], [2, 2], float("nan"))
M.define(gamma, "gamma_only", "int64", ["i"], [4], [2], None)
M.define(delta, "mixed", "string", ["k"], [3], None, None)  # same name as beta's int16
M.define(delta, "u_float32", "float32", ["t"], [10], [4], 1.5)

# flush 1: partial writes that leave unwritten chunks
for k, dt in enumerate(DTYPES):
    M.write(alpha, f"c_{dt}", [0, 0], gen(dt, (3, 5), 1 + k))
    M.write(alpha, f"u_{dt}", [1], gen(dt, (4,), 2 + k))
    if dt != "uint32":  # z_uint32 stays unwritten until compaction
        M.write(alpha, f"z_{dt}", [], gen(dt, (), 3 + k))
M.write(alpha, "cube", [1, 1, 1], gen("int32", (2, 2, 3), 4))
M.write(beta, "c_float64", [1, 1], gen("float64", (3, 3), 5))
M.write(beta, "c_int32", [0], gen("int32", (3,), 6))
M.write(beta, "mixed", [0], gen("int16", (5,), 7))
M.write(beta, "c_float32", [0, 0], gen("float32", (2, 2), 8))
M.write(gamma, "c_float64", [0, 0], gen("float64", (3, 3), 9))
M.write(gamma, "gamma_only", [0], gen("int64", (4,), 10))
M.write(delta, "mixed", [0], gen("string", (3,), 11))
M.write(delta, "u_float32", [2], gen("float32", (5,), 12))
a.flush()

# flush 2: overlapping writes across chunk boundaries (read-modify-write over sidecar 1)
for k, dt in enumerate(DTYPES):
    M.write(alpha, f"c_{dt}", [2, 4], gen(dt, (2, 2), 20 + k))
    M.write(alpha, f"u_{dt}", [0], gen(dt, (2,), 40 + k))
M.write(alpha, "cube", [0, 2, 3], gen("int32", (3, 2, 2), 14))
attr(alpha, "count", 43, "int")  # overwrite keeps the key's position
M.write(delta, "u_float32", [6], gen("float32", (4,), 13))
a.flush()

# flush 3: deletes
M.delete_array(alpha, "u_int16")  # its only user: 0.10 leaves a live orphan entry (D3)
M.delete_array(beta, "c_float32")  # shared with alpha: a persisted tombstone
M.delete_dataset(a, "gamma")
a.flush()

# compaction, then more writes (sidecars again) and a new dataset
a.compact()
# atlas-python 0.10 keys its block cache by (path, block id), and the flush after a
# compaction reuses the name data.1.af: in the same session it then reads stale
# blocks (D2; for strings the stats pass panics). A fresh handle avoids that.
a.close()
a = atlas.Atlas.open(store)
alpha = a.open_dataset("alpha")
for k, dt in enumerate(DTYPES):
    M.write(alpha, f"c_{dt}", [4, 0], gen(dt, (1, 7), 60 + k))  # the edge row of chunks
    M.write(alpha, f"c_{dt}", [1, 1], gen(dt, (1, 1), 80 + k))  # RMW over the compacted base
epsilon = a.create_dataset("epsilon")
attr(epsilon, "after_compact", True, "bool")
M.define(epsilon, "c_uint8", "uint8", ["a", "b"], [2, 2], [1, 2], 9)
M.define(epsilon, "c_string", "string", ["a", "b"], [3, 2], [2, 2], None)
M.define(epsilon, "post_compact_unwritten", "int8", ["i"], [4], [3], -3)
M.write(epsilon, "c_uint8", [0, 0], gen("uint8", (1, 2), 90))
M.write(epsilon, "c_string", [0, 0], gen("string", (3, 2), 91))
a.flush()
a.close()

M.verify(store, "atlas-python reading back its own store")
exp = dump_store(store, kinds, f"python-written {codec}/{fmt}/{comp}")
exp["meta_file"] = meta_file_name(fmt, comp)
exp["absent"] = [["alpha", "u_int16"], ["beta", "c_float32"]]
exp["absent_datasets"] = ["gamma"]
assert exp["datasets"] == ["alpha", "beta", "delta", "epsilon"], exp["datasets"]
write_json(out, exp)
print(f"wrote {sum(len(d['meta']) for d in exp['data'].values())} arrays")
