"""Near-duplicate images across the splits of a folder data set (issue 13: busi256 before
any figure is trusted; rsna640 too), by perceptual hash.

    BCDIAG_DATA_DIR=../shared/data .venv/bin/python benchmarks/near_duplicates.py busi256

Prints each pair of images in different splits whose 64-bit pHashes differ in at most
``--max-bits`` bits, then a count per pair of splits. pHash (DCT of a 32x32 grey copy)
is robust to rescaling and mild contrast changes, not to crops or flips.
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections import Counter
from pathlib import Path

import imagehash
import pandas as pd
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a folder of BCDIAG_DATA_DIR with labels.csv")
    parser.add_argument("--max-bits", type=int, default=6, help="largest Hamming distance")
    args = parser.parse_args()
    root = Path(os.environ["BCDIAG_DATA_DIR"]) / args.dataset
    labels = pd.read_csv(root / "labels.csv")
    hashes = [imagehash.phash(Image.open(root / file).convert("L")) for file in labels.file]
    pairs: Counter[tuple[str, str]] = Counter()
    for i, j in itertools.combinations(range(len(labels)), 2):
        first, second = labels.iloc[i], labels.iloc[j]
        if first.split == second.split:
            continue
        distance = hashes[i] - hashes[j]
        if distance <= args.max_bits:
            splits = tuple(sorted((first.split, second.split)))
            pairs[splits] += 1  # type: ignore[index]
            print(
                f"{distance:2d} bits  {first.file} ({first.split}, {first.label})  "
                f"{second.file} ({second.split}, {second.label})"
            )
    print(f"{len(labels)} images; cross-split pairs within {args.max_bits} bits: {dict(pairs)}")


if __name__ == "__main__":
    main()
