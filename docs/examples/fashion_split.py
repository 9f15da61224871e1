"""Split Fashion-MNIST by class into two ``idx:`` sources, for a within-domain transfer test
(Yosinski et al. 2014): a model trained on one group of classes, its features tried on the other.

    python docs/examples/fashion_split.py --out OUT [--first 6]

OUT/first6 gets classes 0-5 (T-shirt/top ... Sandal), OUT/last4 classes 6-9 (Shirt ... Ankle
boot) relabelled 0-3; each has the train and test images of its classes and a classes.txt.
"""

import argparse
import os

from zfkeras.data.sources.idx import DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_CLASS_NAMES, load_idx, write_idx


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--first", type=int, default=6, help="Classes 0..FIRST-1 form the first group.")
    args = parser.parse_args()
    groups = {f"first{args.first}": range(0, args.first), f"last{10 - args.first}": range(args.first, 10)}
    for prefix in ("train", "t10k"):
        images = load_idx(os.path.join(DEBIAN_FASHION_MNIST_DIR, f"{prefix}-images-idx3-ubyte.gz"))
        labels = load_idx(os.path.join(DEBIAN_FASHION_MNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
        for name, classes in groups.items():
            directory = os.path.join(args.out, name)
            os.makedirs(directory, exist_ok=True)
            keep = (labels >= classes.start) & (labels < classes.stop)
            write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images[keep])
            write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), labels[keep] - classes.start)
            with open(os.path.join(directory, "classes.txt"), "w") as handle:
                handle.write("".join(FASHION_MNIST_CLASS_NAMES[c] + "\n" for c in classes))
            print(f"{directory}: {prefix} {int(keep.sum())} images of {len(classes)} classes")


if __name__ == "__main__":
    main()
