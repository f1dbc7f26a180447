"""Writes a small demo store with atlas-python 0.10 (the reference implementation),
so the demo also shows that atlasfs reads what atlas writes.

usage: make_demo_store.py STORE [N_STATIONS]
"""
import sys

import atlas
import numpy as np

store = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
a = atlas.Atlas.create(store, codec="zstd")
hours = np.arange(np.datetime64("2024-01-01T00:00", "ns"), np.datetime64("2024-01-02T00:00", "ns"), np.timedelta64(1, "h"))
for i in range(n):
    rng = np.random.default_rng(seed=i)
    d = a.create_dataset(f"station_{i:03d}")
    d.define_array("time", "timestamp_nanoseconds", ["time"], [24])
    d.write_array("time", [0], hours.view("int64"))
    for name, dtype, base, scale in [("temperature", "float32", 15.0, 5.0), ("pressure", "float64", 1013.0, 8.0), ("humidity", "float32", 60.0, 15.0)]:
        v = (base + rng.normal(0, scale, 24)).astype(dtype)
        if name == "humidity":
            v = np.clip(v, 0, 100).astype(dtype)
        d.define_array(name, dtype, ["time"], [24], fill_value=float("nan"))
        d.write_array(name, [0], v)
    d.set_attribute("station_id", i)
    d.set_attribute("name", f"Station {i}")
g = a.create_dataset("grid")
g.define_array("temperature", "float32", ["lat", "lon", "time"], [100, 100, 48], chunk_shape=[50, 50, 24])
g.write_array("temperature", [0, 0, 0], np.random.default_rng(7).normal(10, 3, (100, 100, 48)).astype("float32"))
a.flush()
print(f"demo store: {n} stations + 1 grid at {store}")
