"""HTML for ``zf report``: one static page, inline CSS, no script, no web fonts, images by file name."""

import dataclasses
import html

from pipelines.output import ERROR_COLUMNS

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 0; color: #1d232a; background: #fff; }
header { background: #22313f; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 2px 0; font-size: 13px; opacity: .9; }
nav { padding: 8px 32px; background: #eef2f5; font-size: 13px; position: sticky; top: 0; }
nav a { margin-right: 14px; color: #22313f; }
main { padding: 0 32px 40px; max-width: 1700px; }
section { border-bottom: 1px solid #dde3e8; padding: 10px 0 18px; }
h2 { font-size: 20px; margin: 18px 0 8px; } h2 small { font-weight: normal; color: #5c6b78; font-size: 14px; }
figure { margin: 14px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e3e7ea; }
figcaption { font-size: 13px; color: #33414d; max-width: 1000px; }
table { border-collapse: collapse; margin: 10px 0; font-size: 13px; }
th, td { border: 1px solid #d5dbe0; padding: 3px 9px; text-align: left; } th { background: #f3f6f8; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
p.caption { font-size: 13px; color: #33414d; margin: 0 0 10px; max-width: 1000px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; font-size: 13px; } dt { font-weight: bold; }
pre { background: #f5f7f9; padding: 8px 10px; white-space: pre-wrap; font-size: 12px; }
.note { color: #6b5200; background: #fff8e1; padding: 6px 10px; font-size: 13px; }
"""


@dataclasses.dataclass
class Section:
    """One part of the page: ``key`` (a --skip name), ``title``, ``paper`` (the figure or table it
    reproduces), ``body`` (HTML fragments), ``numbers`` (for results.json) and a one-line ``summary``."""

    key: str
    title: str
    paper: str
    body: list
    numbers: dict
    summary: str = ""


def escape(value):
    return html.escape(str(value))


def figure(src, title, caption):
    """An image file next to the page with a caption saying what it shows and what to look for."""
    return f'<figure><img src="{escape(src)}" alt="{escape(title)}"><figcaption><b>{escape(title)}.</b> {escape(caption)}</figcaption></figure>'


def table(header, rows, caption=None):
    cells = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in rows)
    caption = f'<p class="caption">{escape(caption)}</p>' if caption else ""
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>{caption}"


def _cell(value):
    text = str(value)
    numeric = text.replace(",", "").replace("%", "").replace("±", "").replace(" ", "").replace(".", "").replace("-", "")
    return f'<td class="number">{escape(text)}</td>' if numeric.isdigit() else f"<td>{escape(text)}</td>"


def facts(pairs, caption=None):
    items = "".join(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>" for key, value in pairs)
    return f"<dl>{items}</dl>" + (f'<p class="caption">{escape(caption)}</p>' if caption else "")


def links(label, items):
    """``label`` then each ``(text, href)``: a link where ``href`` is given, plain text where it is None."""
    parts = [f'<a href="{escape(href)}">{escape(text)}</a>' if href else escape(text) for text, href in items]
    return f'<p class="caption">{escape(label)} {", ".join(parts)}</p>'


def note(text):
    return f'<p class="note">{escape(text)}</p>'


def code(text):
    return f"<pre>{escape(text)}</pre>"


def accuracy_table(errors, images):
    """Error and accuracy per column of ``zf evaluate``; each cell carries ``data-metric`` (the
    key of zf evaluate's JSON) and ``data-value`` (the fraction) so the page can be checked."""
    rows = []
    for key, title in ERROR_COLUMNS:
        if key in errors:
            value = errors[key]
            rows.append(
                f'<tr><td>{escape(title)}</td><td class="number" data-metric="{key}" data-value="{value!r}">'
                f'{100 * value:.2f}%</td><td class="number">{100 * (1 - value):.2f}%</td></tr>'
            )
    return (
        "<table><thead><tr><th>error</th><th>value</th><th>accuracy</th></tr></thead><tbody>"
        + "".join(rows)
        + '</tbody></table><p class="caption">'
        + escape(
            f"On {images} images. Single crop: the centre crop; 10 crops: the 4 corners and the centre of the image "
            "and of its mirror image, probabilities averaged (the paper's test protocol). zf evaluate gives the same "
            "numbers."
        )
        + "</p>"
    )


def _percent(row):
    return f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}"


def transfer_table(results, caption):
    """Rows: pretrained / scratch; columns: training images per class (``zf transfer``'s summary)."""
    rows = results["summary"]
    sizes = sorted({row["n_per_class"] for row in rows})
    methods = list(dict.fromkeys(row["method"] for row in rows))
    cell = {(row["method"], row["n_per_class"]): _percent(row) for row in rows}
    return table(
        ["method"] + [f"acc % {n}/class" for n in sizes], [[method] + [cell.get((method, n), "") for n in sizes] for method in methods], caption
    )


def layers_table(results, caption):
    """Rows: layers; columns: classifier x training images per class (``zf layers``'s summary)."""
    rows = results["summary"]
    columns = list(dict.fromkeys((row["classifier"], row["n_per_class"]) for row in rows))
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    cell = {(row["layer"], row["classifier"], row["n_per_class"]): _percent(row) for row in rows}
    values = results.get("features") or {}
    return table(
        ["layer", "features"] + [f"{c} {n}/class" for c, n in columns],
        [[layer, f"{values.get(layer, {}).get('values', '')}"] + [cell.get((layer, c, n), "") for c, n in columns] for layer in layers],
        caption,
    )


def document(header, identity, sections):
    """The whole page."""
    title = f"zf report: {header['model']}"
    nav = "".join(f'<a href="#{escape(s.key)}">{escape(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        parts.append(f'<section id="{escape(s.key)}"><h2>{escape(s.title)} <small>{escape(s.paper)}</small></h2>' + "".join(s.body) + "</section>")
    images = "all" if header["images"] is None else header["images"]
    skipped = f" Left out: {', '.join(header['skipped'])}." if header["skipped"] else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{escape(identity['model_name'])} <small>{escape(header['model'])}</small></h1>"
        f"<p>Data: {escape(header['data'])}, {escape(header['split'])} split, {escape(images)} images. "
        f"Made with zfkeras {escape(header['zfkeras_version'])}.{escape(skipped)}</p>"
        f"<p>Made by: <code>{escape(header['command'])}</code></p></header>"
        f"<nav>{nav}</nav><main>{''.join(parts)}</main></body></html>\n"
    )
