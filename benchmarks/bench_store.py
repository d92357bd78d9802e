"""The vector store at a million clips: a store of N generated 512-d clip vectors (clustered: 2,000 centres, noise
0.6, unit length; 1,000 clips per "video"), written as the store's Parquet parts; then the approximate index's
build time, and for 200 queries (stored vectors plus noise) recall@10 against exact search, p50/p99 latency of
``Store.search`` and of exact search, and the process's peak RSS.

    python benchmarks/bench_store.py [--clips 1000000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

import vidvec.store as store_module
from vidvec.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    dim, per_video = 512, 1000
    centres = rng.normal(size=(2000, dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "store")
        manifest = {"vidvec_store": store_module.STORE_VERSION, "models": {}}
        entry = {"settings_hash": "0" * 16, "settings": {"model": "generated"}, "dim": dim, "parts": []}
        store.path.mkdir(parents=True)
        began = time.perf_counter()
        part = None
        for video in range(args.clips // per_video):
            x = centres[rng.integers(0, len(centres), per_video)] + 0.6 * rng.normal(size=(per_video, dim))
            x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
            spans = np.stack([np.arange(per_video), np.arange(1, per_video + 1)], 1).astype(np.float64)
            part = part or store._new_part(entry, "generated", None)
            part.add(f"v{video:06d}", f"/data/v{video:06d}.mp4", x, {"timestamps": spans, "video_vector": x.mean(0)},
                     {})
            if part.clips >= store_module.PART_CLIPS:
                store._finish_part(manifest, entry, part)
                part = None
        if part is not None:
            store._finish_part(manifest, entry, part)
        print(f"{args.clips} clips written as {len(entry['parts'])} parts in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        store._build_ann(manifest, entry, "generated")
        print(f"approximate index (faiss IVF, float16, {entry['ann']['lists']} lists): built in {time.perf_counter() - began:.1f} s")
        stored = store_module._vectors(store.to_arrow("generated"))
        queries = stored[rng.integers(0, len(stored), 200)] + 0.05 * rng.normal(size=(200, dim)).astype(np.float32)
        ann_ms, exact_ms, recall = [], [], []
        for query in queries:
            began = time.perf_counter()
            clips, _ = store.search(query, k=10)
            ann_ms.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            scores = stored @ (query / np.linalg.norm(query))
            truth = set(np.argpartition(-scores, 10)[:10].tolist())
            exact_ms.append((time.perf_counter() - began) * 1000)
            found = {int(h.video[1:]) * per_video + h.clip for h in clips}
            recall.append(len(found & truth) / 10)
        print(f"Store.search (approximate, nprobe {store_module.ANN_NPROBE}): recall@10 {np.mean(recall):.3f}, "
              f"p50 {np.percentile(ann_ms, 50):.1f} ms, p99 {np.percentile(ann_ms, 99):.1f} ms")
        print(f"exact (numpy, vectors in memory): p50 {np.percentile(exact_ms, 50):.1f} ms, "
              f"p99 {np.percentile(exact_ms, 99):.1f} ms")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
