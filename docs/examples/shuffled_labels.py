"""Write Fashion-MNIST with shuffled training labels as an ``idx:`` source, for the data
randomisation test of ``zf sanity --random-labels-model`` (Adebayo et al. 2018, Sec. 5).

    python docs/examples/shuffled_labels.py OUT [--images N] [--seed S]

OUT gets the first N training images (default 10000) with their labels permuted at random
(seeded), and the real test split unchanged; train a model on it with ``zf train --data idx:OUT``.
"""

import argparse
import os

import numpy as np

from zfkeras.data.sources.idx import load_idx, write_idx

FASHION = "/usr/share/datasets/fashion-mnist"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    images = load_idx(os.path.join(FASHION, "train-images-idx3-ubyte.gz"))[: args.images]
    labels = load_idx(os.path.join(FASHION, "train-labels-idx1-ubyte.gz"))[: args.images]
    write_idx(os.path.join(args.out, "train-images-idx3-ubyte.gz"), images)
    write_idx(os.path.join(args.out, "train-labels-idx1-ubyte.gz"), np.random.default_rng(args.seed).permutation(labels))
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        write_idx(os.path.join(args.out, name), load_idx(os.path.join(FASHION, name)))
    print(f"wrote {args.out}: {len(images)} training images with shuffled labels (seed {args.seed}), the real test split")


if __name__ == "__main__":
    main()
