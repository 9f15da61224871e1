"""Copy a reproduction's records into the repository and its tables into the docs (the last step of
docs/reproduce_emoji64.sh), so that every number the docs state comes from a results file.

    python docs/examples/publish_findings.py RESULTS FIGURES DOC.md [DOC.md ...] [--path ABS=NAME ...]

Copies each experiment's JSON records, tables and figures under RESULTS (files up to 2.5 MB) to
FIGURES/<experiment>/. The records name the directories the steps read and wrote; in the copies,
a path inside this repository becomes relative to it, and each ``--path ABS=NAME`` (a directory
the run was given as an absolute path, e.g. a data set kept elsewhere) becomes ``NAME``, the
repository-relative name ``make reproduce`` gives it by default: a reader has none of the
machine's paths. It replaces the text between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` in each DOC.md: ``findings`` gets zf findings' table, ``accuracy`` the
shipped model's errors (plain TensorFlow and zf evaluate), ``times`` the wall time and peak memory
of each step (RESULTS/times.tsv).
"""

import argparse
import glob
import json
import os
import re
import shutil

KEPT = (".json", ".png", ".txt", ".csv", ".tsv", ".html")  # .html: the report page beside its figures
LIMIT = 5 * 1024 * 1024 // 2  # 2.5 MB: the conv5 top-9 figure fits, the correspondence masks (8 MB) do not


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def path_names(pairs):
    """``[(absolute directory, name)]`` from ``ABS=NAME`` pairs plus this repository's root (-> ""),
    longest first, so a directory inside another is renamed by its own pair."""
    names = [(os.path.realpath(old), new) for old, new in (pair.split("=", 1) for pair in pairs)]
    names.append((ROOT, ""))
    return sorted(names, key=lambda item: -len(item[0]))


def relative_text(text, names):
    """``text`` with every ``ABS`` or ``ABS/...`` of ``names`` written as its name (``NAME/...``)."""
    for old, new in names:
        # ABS itself or ABS/...; not a longer name that starts with it (emoji64 is not emoji64-c100)
        text = re.sub(re.escape(old) + r"(/|(?![\w+-]))", lambda m, new=new: new + m.group(1) if new else "", text)
    return text


def copy_records(results, figures, names):
    """Copy the kept files of RESULTS (any depth) to FIGURES, same relative paths, the text ones
    with :func:`relative_text`; returns the count."""
    count = 0
    for path in glob.glob(os.path.join(results, "**", "*"), recursive=True):
        if os.path.isfile(path) and path.endswith(KEPT) and os.path.getsize(path) <= LIMIT and "/." not in path:
            target = os.path.join(figures, os.path.relpath(path, results))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if path.endswith(".png"):
                shutil.copyfile(path, target)
            else:
                with open(path) as source, open(target, "w") as copy:
                    copy.write(relative_text(source.read(), names))
            count += 1
    return count


def accuracy_table(results):
    """The shipped model's top-1/top-5 errors on the held-out artist, as a Markdown table."""
    rows = ["| read by | images | top-1 error | top-5 error | top-1, 10 crops | top-5, 10 crops |", "|---|---|---|---|---|---|"]
    plain = os.path.join(results, "plain-tf.json")
    if os.path.exists(plain):
        with open(plain) as handle:
            p = json.load(handle)
        rows.append(
            f"| plain `tf.saved_model.load(path).serve` (docs/examples/plain_tf_accuracy.py) | {p['images']:,} | {p['top1_error']:.2%} | "
            f"{p['top5_error']:.2%} | {p['ten_crop_top1_error']:.2%} | {p['ten_crop_top5_error']:.2%} |"
        )
    evaluated = os.path.join(results, "evaluate", "results.json")
    if os.path.exists(evaluated):
        with open(evaluated) as handle:
            e = json.load(handle)
        m = next(iter(e["models"].values()))
        rows.append(
            f"| `zf evaluate` | {e['num_images']:,} | {m['top1_error']:.2%} | {m['top5_error']:.2%} | "
            f"{m['ten_crop_top1_error']:.2%} | {m['ten_crop_top5_error']:.2%} |"
        )
    return "\n".join(rows)


def times_table(results):
    """Each step's wall time and peak resident memory (RESULTS/times.tsv), as a Markdown table."""
    rows = ["| step | wall time | peak memory |", "|---|---|---|"]
    path = os.path.join(results, "times.tsv")
    if os.path.exists(path):
        with open(path) as handle:
            for line in handle:
                name, seconds, kilobytes = line.rstrip("\n").split("\t")
                rows.append(f"| {name} | {float(seconds) / 60:.1f} min | {int(kilobytes) / 1024**2:.2f} GiB |")
    return "\n".join(rows)


def replace_between(text, name, content):
    """``text`` with the part between the ``name`` markers replaced by ``content`` (markers kept)."""
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + content.rstrip("\n") + "\n" + m.group(2), text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("figures")
    parser.add_argument("docs", nargs="+")
    parser.add_argument("--path", action="append", default=[], metavar="ABS=NAME", help="write directory ABS as NAME in the copies")
    args = parser.parse_args()
    copied = copy_records(args.results, args.figures, path_names(args.path))
    with open(os.path.join(args.results, "findings", "table.txt")) as handle:
        tables = {"findings": handle.read(), "accuracy": accuracy_table(args.results), "times": times_table(args.results)}
    for doc in args.docs:
        with open(doc) as handle:
            text = handle.read()
        for name, content in tables.items():
            text = replace_between(text, name, content)
        with open(doc + ".tmp", "w") as handle:
            handle.write(text)
        os.replace(doc + ".tmp", doc)
    print(f"copied {copied} files to {args.figures}; tables written into {', '.join(args.docs)}")


if __name__ == "__main__":
    main()
