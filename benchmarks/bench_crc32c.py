"""Throughput of the pure-Python/numpy CRC32C (used when google-crc32c is absent) and of the checkpoint
verification it serves, on this machine.

    python benchmarks/bench_crc32c.py [--mb 2.7] [--repeats 5] [--checkpoint ../shared/weights/mzsr_official/Pretrained.index]

Prints MB/s of ``crc32c_pure`` and, with ``--checkpoint``, the seconds to read and CRC-verify a TensorFlow
checkpoint with the pure implementation (medians). These were wall-clock assertions in the test suite;
timing belongs here, where the machine's load can be seen and repeated.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from metasr_adapter.io import crc32c as crcmod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=2.7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checkpoint", default=None)
    args = ap.parse_args()
    data = np.random.default_rng(0).integers(0, 256, int(args.mb * 1e6), dtype=np.uint8).tobytes()
    crcmod.crc32c_pure(data[:100_000])
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        crcmod.crc32c_pure(data)
        times.append(time.perf_counter() - t)
    print(f"crc32c_pure: {args.mb / statistics.median(times):.1f} MB/s (median of {args.repeats})")
    if args.checkpoint:
        from metasr_adapter.io.tf_checkpoint import read_tf_checkpoint

        crcmod._impl = crcmod.crc32c_pure
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            read_tf_checkpoint(args.checkpoint, verify=True)
            times.append(time.perf_counter() - t)
        print(f"read + verify {args.checkpoint} (pure CRC): {statistics.median(times):.3f} s (median)")


if __name__ == "__main__":
    main()
