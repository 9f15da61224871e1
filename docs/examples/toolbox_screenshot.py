"""The screenshot of docs/toolbox.md: ``zf toolbox`` on the shipped model, driven in headless Chromium
as a person would use it: the first 24 Fashion-MNIST test images offered (--data), test image 12
(a sneaker) chosen, conv5 chosen, its strongest map clicked, then "Occlude this frame".

    PYTHONPATH=. .venv/bin/python docs/examples/toolbox_screenshot.py [--atlas DIR]

Writes docs/figures/toolbox/page.png. With ``--atlas DIR`` (a ``zf atlas`` of the shipped model) the
unit's top-9 from the atlas shows too. About a minute on 2 cores.
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from browser import Browser  # noqa: E402

from benchmarks.toolbox import SHIPPED, ToolboxServer  # noqa: E402

OUT = os.path.join(ROOT, "docs", "figures", "toolbox", "page.png")
IMAGE = 12


def wait(chrome, condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not chrome.evaluate(condition):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {condition}: {chrome.errors()}")
        time.sleep(0.1)


def main(argv):
    extra = ["--atlas", argv[argv.index("--atlas") + 1]] if "--atlas" in argv else []
    server = ToolboxServer(os.path.relpath(SHIPPED, ROOT), "--data", "fashion_mnist", "--images", 24, *extra)
    chrome = Browser()
    try:
        chrome.open(server.address, width=1400, height=1060)
        wait(chrome, "toolbox.model !== null && document.querySelectorAll('#thumbs img').length === 24")
        chrome.evaluate(f"document.querySelectorAll('#thumbs img')[{IMAGE}].click()")
        wait(chrome, "toolbox.frames > 0")
        chrome.evaluate("(() => { const s = document.getElementById('layers'); s.value = 'conv5'; s.dispatchEvent(new Event('change')); })()")
        wait(chrome, "toolbox.shown.answer.layer === 'conv5'")
        # the strongest map of this frame, clicked where the grid draws it
        geometry, (left, top, scale) = chrome.evaluate(
            "(() => { const a = toolbox.shown.answer; const p = document.getElementById('maps'); const r = p.getBoundingClientRect();"
            " return [a.maps, [r.left, r.top, r.width / p.naturalWidth]]; })()"
        )
        strongest = best_unit(server, IMAGE)
        row, column = divmod(strongest, geometry["columns"])
        height, width = geometry["tile"]
        x = geometry["pad"] + column * (width + geometry["pad"]) + width / 2
        y = geometry["pad"] + row * (height + geometry["pad"]) + height / 2
        chrome.click(left + x * scale, top + y * scale)
        wait(chrome, f"toolbox.shown.answer.unit !== null && toolbox.shown.answer.unit.index === {strongest}")
        chrome.evaluate("document.getElementById('occlude').click()")
        wait(chrome, "!document.getElementById('occlusion').hidden && document.getElementById('occlusion').complete", timeout=300)
        time.sleep(0.5)
        errors = chrome.errors()
        if errors:
            raise RuntimeError(f"the page logged errors: {errors}")
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        with open(OUT, "wb") as handle:
            handle.write(chrome.screenshot())
        print(f"wrote {OUT}: image {IMAGE} of the Fashion-MNIST test split, conv5 unit {strongest}")
    finally:
        chrome.close()
        server.stop()


def best_unit(server, index):
    """The conv5 map with the largest activation on --data image ``index`` (asked of the app itself)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{server.address}api/data/{index}.png") as response:
        frame = response.read()
    best, value = 0, -1.0
    for unit in range(64):
        call = urllib.request.Request(f"{server.address}api/frame?layer=conv5&unit={unit}", data=frame, method="POST")
        with urllib.request.urlopen(call) as response:
            activation = json.loads(response.read())["unit"]["activation"]
        if activation > value:
            best, value = unit, activation
    return best


if __name__ == "__main__":
    main(sys.argv[1:])
