#!/usr/bin/env bash
# Rebuild every figure and table in docs/figures/ that comes from the shipped model, with the
# commands the README shows (make figures). About an hour on 2 CPU cores; zf ablate trains its own
# models and is left out (its command is in the README).
set -euo pipefail
cd "$(dirname "$0")/.."
ZF=${ZF:-.venv/bin/zf}
PYTHON=${PYTHON:-.venv/bin/python}
MODEL=saved_models/zfnet-fashion-mnist
EX=docs/examples
set -x
$ZF visualize $MODEL --data fashion_mnist --out docs/figures/visualize
$ZF evolution $MODEL --data fashion_mnist --out docs/figures/evolution
$ZF filters $MODEL --data fashion_mnist --maps all --out docs/figures/filters
$ZF occlusion $MODEL $EX/ankle-boot-0.png $EX/shirt-4.png $EX/bag-18.png $EX/sneaker-9.png \
    --label "Ankle boot" --label Shirt --label Bag --label Sneaker --patch 10 --out docs/figures/occlusion
$ZF invariance $MODEL $EX/ankle-boot-0.png $EX/trouser-2.png $EX/shirt-4.png $EX/sneaker-9.png $EX/bag-18.png \
    --label "Ankle boot" --label Trouser --label Shirt --label Sneaker --label Bag --out docs/figures/invariance
$ZF correspondence $MODEL --parts $EX/shirt-parts.json --out docs/figures/correspondence
$ZF transfer $MODEL --data mnist_5k --per-class 1,5,10,15,30 --folds 5 --scratch-epochs 30 --seed 0 \
    --out docs/figures/transfer
$ZF layers $MODEL --data mnist_5k --per-class 5,30 --folds 5 --seed 0 --out docs/figures/layers
# A Keras application with random weights (seeded: --seed 0), on scikit-image's photos (docs/models-and-export.md).
$PYTHON -c "
import os; from skimage import data, io
for name, label in [('chelsea', 'cat'), ('coffee', 'cup'), ('astronaut', 'person'), ('rocket', 'rocket')]:
    os.makedirs(f'out/photos/{label}', exist_ok=True); io.imsave(f'out/photos/{label}/{name}.png', getattr(data, name)())"
$ZF visualize keras:resnet50 --weights none --data folder:out/photos --split train \
    --layers conv2_block1_2_conv,conv4_block6_out --maps random:4 --k 4 --out docs/figures/resnet50/visualize
$ZF occlusion keras:resnet50 --weights none chelsea coffee --stride 32 --out docs/figures/resnet50/occlusion
# Can a projection be trusted? (docs/trust.md): a model trained on shuffled labels for the data test.
.venv/bin/python docs/examples/shuffled_labels.py out/shuffled-data --images 1000
$ZF train --arch zfnet_small --data idx:out/shuffled-data --units fc6=512,fc7=512 --epochs 200 --batch-size 32 \
    --dropout 0 --kernel-init glorot_uniform --val-split 0 --patience 1000 --checkpoint-epochs 200 \
    --log-projections 0 --no-progress --seed 0 --out out/shuffled-run
$ZF sanity $MODEL --data fashion_mnist --images 100 --random-labels-model out/shuffled-run/model.keras \
    --out docs/figures/trust/sanity
$ZF faithfulness $MODEL --data fashion_mnist --images 100 --out docs/figures/trust/faithfulness
$ZF report $MODEL --data fashion_mnist --parts $EX/shirt-parts.json \
    --results docs/figures/transfer --results docs/figures/layers --out docs/figures/report/page
# The README's screenshot of the page, by Debian's headless Chromium.
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --user-data-dir="$profile" --hide-scrollbars --window-size=1385,2400 \
    --screenshot="$PWD/docs/figures/report/screenshot.png" "file://$PWD/docs/figures/report/page/index.html"
rm -rf "$profile"
# The atlas: the whole one (10 MB, not shipped) for the screenshots, and a small complete one shipped.
$ZF atlas $MODEL --data fashion_mnist --out out/atlas
$PYTHON tests/browser.py out/atlas/index.html docs/figures/atlas/index.png 420
$PYTHON tests/browser.py out/atlas/conv5/index.html docs/figures/atlas/conv5-layer.png 760
$PYTHON tests/browser.py out/atlas/conv5/37.html docs/figures/atlas/conv5-unit.png 2000
$ZF atlas $MODEL --data fashion_mnist --layers conv1,conv3,conv5 --maps random:6 --out docs/figures/atlas/site
