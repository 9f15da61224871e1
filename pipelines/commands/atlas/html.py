"""HTML of the atlas site: static pages, one shared ``style.css``, no script, no web fonts, every
link and image a relative path inside the site. Numbers come from the records ``atlas.json`` holds
(:mod:`.site`), so the pages show nothing that file does not."""

import html
import math

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 0; color: #1d232a; background: #fff; }
header { background: #22313f; color: #fff; padding: 14px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; } header p { margin: 2px 0; font-size: 13px; opacity: .9; }
header a { color: #cfe3f5; }
nav { padding: 7px 28px; background: #eef2f5; font-size: 13px; }
nav a { margin-right: 14px; color: #22313f; }
main { padding: 4px 28px 36px; max-width: 1600px; }
h2 { font-size: 18px; margin: 18px 0 8px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d5dbe0; padding: 3px 8px; text-align: left; } th { background: #f3f6f8; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
p.caption { font-size: 13px; color: #33414d; max-width: 1000px; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
.card { width: 112px; font-size: 11px; text-align: center; border: 1px solid #e3e7ea; padding: 4px; }
.card img, .pair img, .strip img { image-rendering: pixelated; background: #fff; }
.card a { color: #1d232a; text-decoration: none; }
.flag { display: inline-block; padding: 0 4px; border-radius: 3px; font-size: 10px; color: #fff; }
.dead { background: #8a1c1c; } .dup { background: #9a6a00; }
.pair { display: flex; gap: 22px; align-items: flex-start; flex-wrap: wrap; }
.pair figure { margin: 0; } figcaption { font-size: 12px; color: #33414d; max-width: 320px; }
.bar { background: #4a7fb0; height: 11px; display: inline-block; vertical-align: middle; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; font-size: 13px; } dt { font-weight: bold; }
svg text { font-size: 10px; fill: #33414d; }
"""


def escape(value):
    return html.escape(str(value))


def number(value, digits=3):
    """``value`` with ``digits`` significant digits, or "n/a" for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def percent(fraction):
    """``fraction`` as a percentage with 2 significant digits (0.004 -> "0.4%")."""
    return "n/a" if fraction is None else f"{100 * fraction:.2g}%"


def page(title, depth, header_html, nav, body):
    """One whole page; ``depth`` is how many folders below the site root it lives (for style.css)."""
    prefix = "../" * depth
    links = "".join(f'<a href="{escape(href)}">{escape(text)}</a>' for href, text in nav)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="{prefix}style.css"></head><body>'
        f"<header>{header_html}</header><nav>{links}</nav><main>{''.join(body)}</main></body></html>\n"
    )


def site_header(header, title):
    images = header["images"]
    return (
        f"<h1>{escape(title)}</h1><p>{escape(header['model'])}: {escape(header['data'])}, {escape(header['split'])} split, "
        f"{escape(images)} images. Made with zfkeras {escape(header['zfkeras_version'])} by <code>{escape(header['command'])}</code></p>"
    )


def index_page(header, layers):
    """The site's front page: one row per layer."""
    rows = []
    for name, record in layers.items():
        rows.append(
            f'<tr><td><a href="{escape(name)}/index.html">{escape(name)}</a></td><td class="n">{len(record["units"])}</td>'
            f'<td class="n">{record["units_total"]}</td><td class="n">{record["field"][0]}x{record["field"][1]}</td>'
            f'<td class="n">{len(record["dead"])}</td><td class="n">{len(record["near_duplicates"])}</td>'
            f'<td class="n">{number(record["median_selectivity"])}</td><td class="n">{number(record["mean_fire_rate"])}</td></tr>'
        )
    table = (
        "<table><thead><tr><th>layer</th><th>units shown</th><th>units</th><th>receptive field (px)</th><th>dead</th>"
        "<th>near-duplicate pairs</th><th>median selectivity</th><th>mean fire rate</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
    note = (
        f'<p class="caption">For every unit (feature map) of every layer: its {header["shown"]} strongest activations over the '
        f"{header['images']} images (at most one per image), projected to pixels by the {projected_by(header)} beside the image patches under "
        "them, how often and how strongly it fires, and which classes drive it. Selectivity is the class-selectivity index "
        "(mu_max - mu_rest) / (mu_max + mu_rest) of the unit's class means; dead units never fire on these images; near-duplicates "
        f"are unit pairs whose top-{header['top']} activations correlate at {header['duplicate_threshold']} or more. Every number is "
        'in <a href="atlas.json">atlas.json</a>.</p>'
    )
    return page(f"atlas: {header['model']}", 0, site_header(header, f"Atlas of {header['model_name']}"), [], ["<h2>Layers</h2>", table, note])


def layer_page(header, name, record, order, neighbours, by_selectivity):
    """A layer's units as thumbnails, in ``order`` (unit numbers); ``neighbours`` ``(previous, next)`` layer or None."""
    cards = []
    for unit in order:
        unit_record = record["units"][str(unit)]
        flags = ('<span class="flag dead">dead</span> ' if unit_record["dead"] else "") + (
            '<span class="flag dup">dup</span>' if unit_record["near_duplicates"] else ""
        )
        thumb = unit_record["files"]["thumbnail"]
        cards.append(
            f'<div class="card"><a href="{unit}.html"><img src="{escape(thumb)}" width="{THUMB_SIDE}" alt="unit {unit}"><br>'
            f"unit {unit}</a><br>SI {number(unit_record['selectivity'], 2)} · fires {percent(unit_record['fire_rate'])}<br>{flags}</div>"
        )
    other = ("by-unit.html", "order by unit number") if by_selectivity else ("index.html", "order by selectivity")
    nav = [("../index.html", "atlas index"), other]
    nav += [(f"../{layer}/index.html", f"{arrow} layer {layer}") for layer, arrow in zip(neighbours, ("←", "→")) if layer]
    ordering = "class selectivity, most selective first (dead units last)" if by_selectivity else "unit number"
    caption = (
        f'<p class="caption">{len(order)} of the layer\'s {record["units_total"]} units, by {ordering}. Each thumbnail shows the '
        f"{rule_name(header)} projections of the unit's top-{header['shown']} activations; SI: class-selectivity index; fires: share of the "
        f"images in which the unit is positive anywhere. {len(record['dead'])} dead, {len(record['near_duplicates'])} near-duplicate pairs.</p>"
    )
    title = f"{name}: {len(order)} units"
    return page(f"atlas: {name}", 1, site_header(header, title), nav, [caption, f'<div class="grid">{"".join(cards)}</div>'])


THUMB_SIDE = 96


def rule_name(header):
    """The backward rule of the site's projections (atlas.json's ``rule``; deconvnet before there was a choice)."""
    return header.get("rule", "deconvnet")


def projected_by(header):
    return "deconvnet" if rule_name(header) == "deconvnet" else f"{rule_name(header)} rule"


def unit_page(header, name, record, unit, neighbours):
    """One unit's page; ``neighbours`` ``(previous unit, next unit)`` of the layer, or None."""
    unit_record = record["units"][str(unit)]
    files = unit_record["files"]
    nav = [("../index.html", "atlas index"), ("index.html", f"layer {name}")]
    nav += [(f"{other}.html", f"{arrow} unit {other}") for other, arrow in zip(neighbours, ("←", "→")) if other is not None]
    body = [_facts(header, name, unit_record), "<h2>Top-9 activations</h2>", _top9(header, files, unit_record)]
    body += ["<h2>How strongly it fires</h2>", histogram_svg(header["histogram_edges"], unit_record["histogram"], header["images"])]
    body += ["<h2>The classes it prefers</h2>", _classes(header, unit_record)]
    if unit_record.get("evolution"):
        body += ["<h2>Across training (Fig. 4)</h2>", _evolution(files, unit_record)]
    title = f"{name} unit {unit}"
    return page(f"atlas: {title}", 1, site_header(header, title), nav, body)


def _facts(header, name, unit_record):
    nearest = unit_record["nearest"]
    near = f'<a href="{nearest["unit"]}.html">unit {nearest["unit"]}</a> (correlation {number(nearest["correlation"])})' if nearest else "n/a"
    duplicates = ", ".join(f'<a href="{d}.html">{d}</a>' for d in unit_record["near_duplicates"]) or "none"
    pairs = [
        ("status", "dead: never fires on these images" if unit_record["dead"] else "fires"),
        ("fires on", f"{unit_record['fires']} of {header['images']} images ({100 * unit_record['fire_rate']:.1f}%)"),
        ("mean activation", number(unit_record["mean"], 4)),
        ("class selectivity", number(unit_record["selectivity"])),
        ("most correlated unit", near),
        ("near-duplicates", duplicates),
    ]
    return (
        "<dl>"
        + "".join(f"<dt>{escape(k)}</dt><dd>{v if k in ('most correlated unit', 'near-duplicates') else escape(v)}</dd>" for k, v in pairs)
        + "</dl>"
    )


def _top9(header, files, unit_record):
    scale = files["scale"]
    figures = "".join(
        f'<figure><img src="{escape(files[key])}" width="{files["width"] * scale}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'
        for key, caption in (("projections", f"{rule_name(header)} projections"), ("patches", "image patches (light blue: outside the image)"))
    ) + (_optimized(files, unit_record) if unit_record.get("optimized") else "")
    rows = "".join(
        f'<tr><td class="n">{e["rank"]}</td><td class="n">{e["image"]}</td><td>{escape(e["class"])}</td><td class="n">{number(e["value"], 4)}</td>'
        f'<td class="n">{e["y"]}, {e["x"]}</td></tr>'
        for e in unit_record["top9"]
    )
    table = "<table><thead><tr><th>rank</th><th>image</th><th>class</th><th>activation</th><th>position (y, x)</th></tr></thead><tbody>" + rows
    silent = (
        " Activation 0: the unit is silent on that image too (ties are broken by image index)."
        if any((e["value"] or 0) <= 0 for e in unit_record["top9"])
        else ""
    )
    caption = f"Read left to right, top to bottom; images are indexed in the {header['split']} split.{silent}"
    return f'<div class="pair">{figures}</div>{table}</tbody></table><p class="caption">{escape(caption)}</p>'


def histogram_svg(edges, bins, images, width=520, height=120):
    """Counts of per-image peaks in the fixed bins (``bins`` ``[[bin, count], ...]``, nonzero only) as an inline SVG."""
    if not bins:
        return '<p class="caption">No images.</p>'
    labels = ["<= 0", f"< {edges[0]:.3g}"] + [f"{a:.3g}-{b:.3g}" for a, b in zip(edges[:-1], edges[1:])] + [f">= {edges[-1]:.3g}"]
    counts = dict((int(b), int(c)) for b, c in bins)
    live = [b for b in counts if b > 0]
    shown = [0] + (list(range(min(live), max(live) + 1)) if live else [])
    top = max(counts.values())
    step = (width - 40) / len(shown)
    bars = []
    for i, b in enumerate(shown):
        value = counts.get(b, 0)
        h = (height - 30) * value / top
        colour = "#8a1c1c" if b == 0 else "#4a7fb0"
        bars.append(
            f'<rect x="{30 + i * step:.1f}" y="{height - 20 - h:.1f}" width="{max(step - 1, 1):.1f}" height="{h:.1f}" fill="{colour}">'
            f"<title>{escape(labels[b])}: {value}</title></rect>"
        )
    axis = (
        f'<text x="30" y="{height - 6}">{escape(labels[shown[0]])}</text>'
        f'<text x="{width - 10}" y="{height - 6}" text-anchor="end">{escape(labels[shown[-1]])}</text>'
        f'<text x="2" y="12">{top}</text>'
    )
    caption = (
        f'<p class="caption">The unit\'s strongest activation in each of the {images} images, counted in fixed logarithmic bins '
        "(4 per octave; red: images where it is 0, i.e. silent). Hover a bar for its range and count.</p>"
    )
    return f'<svg width="{width}" height="{height}" role="img">{"".join(bars)}{axis}</svg>{caption}'


def _classes(header, unit_record):
    distribution = unit_record["top100_classes"]
    total = sum(count for _, count in distribution) or 1
    rows = "".join(
        f'<tr><td>{escape(name)}</td><td class="n">{count}</td><td><span class="bar" style="width:{200 * count / total:.0f}px"></span></td></tr>'
        for name, count in distribution
    )
    means = sorted(unit_record["class_means"].items(), key=lambda item: -(item[1] if item[1] is not None else -math.inf))[:5]
    mean_rows = "".join(f'<tr><td>{escape(name)}</td><td class="n">{number(value, 4)}</td></tr>' for name, value in means)
    return (
        '<div class="pair"><div><table><thead><tr><th>class</th><th>images</th><th></th></tr></thead><tbody>'
        + rows
        + f'</tbody></table><p class="caption">Classes of the {total if distribution else 0} images of its top-{header["top"]} in which it fires.</p></div>'
        + "<div><table><thead><tr><th>class</th><th>mean activation</th></tr></thead><tbody>"
        + mean_rows
        + '</tbody></table><p class="caption">The 5 classes with the highest mean activation (the class means of the selectivity index).</p></div></div>'
    )


def _evolution(files, unit_record):
    epochs = unit_record["evolution"]
    cells = "".join(f'<td class="n">{e["epoch"]}: image {e["image"]}, {number(e["value"], 3)}</td>' for e in epochs)
    return (
        f'<div class="strip"><img src="{escape(files["epochs"])}" width="{files["epochs_width"] * files["scale"]}" alt="across epochs"></div>'
        f"<table><tr>{cells}</tr></table>"
        '<p class="caption">At each kept checkpoint (left to right: epoch, image, activation), the projection of the unit\'s strongest '
        "activation over the same images (Fig. 4); a value of 0 means it was silent then.</p>"
    )


def _optimized(files, unit_record):
    """The unit's optimised image, as a figure beside its top-9."""
    optimized = unit_record["optimized"]
    caption = (
        f"the image that maximises it, by optimization: the unit's activation on it {number(optimized['activation'], 4)}, "
        f"on its best data image {number(optimized['top1'], 4)}"
    )
    return (
        f'<figure><img src="{escape(files["optimized"])}" width="{files["optimized_width"]}" alt="optimized image">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )
