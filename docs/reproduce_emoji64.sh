#!/usr/bin/env bash
# The paper's findings on Emoji-64 (docs/reproduction.md): build the data, train the shipped
# zfnet64, run every experiment into RESULTS/<experiment>/ and check the pre-registered criteria
# (zf findings). Each step is skipped when its output exists, so a killed run continues.
# Its steps took 8.3 h of wall time here (2 CPU cores shared with other jobs; per-step times in
# docs/reproduction.md); every step prints its own progress.
#   make reproduce                           # everything, into out/emoji64-results
#   STEPS="evaluate visualize" make reproduce # chosen steps only
set -euo pipefail
cd "$(dirname "$0")/.."
ZF=${ZF:-.venv/bin/zf}
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-out/emoji64}                  # zf emoji's folder
TUX=${TUX:-out/tuxpaint/photos}            # docs/examples/tuxpaint_folder.py's folder (the similar target)
RUN=${RUN:-out/emoji64-run}                # the training run (checkpoints for Fig. 4)
MODEL=${MODEL:-saved_models/emoji64-zfnet64}
RESULTS=${RESULTS:-out/emoji64-results}
SEEDS=${SEEDS:-0 1 2}                      # 3 seeds for Table 3 and Sec. 4.1
STEPS=${STEPS:-data train evaluate plain visualize evolution invariance localization correspondence transfer layers table3 fig6 within report findings publish}
RECIPE="--kernel-init glorot_uniform --dropout 0 --lr 0.01 --momentum 0.9 --patience 3 --batch-size 128"
SMALL=folder:out/emoji64-c100              # 100 classes for the seeded Table 3 / Fig. 6 runs
wanted() { [[ " $STEPS " == *" $1 "* ]]; }
# Wall time and peak memory of every step, appended to RESULTS/times.tsv (GNU time).
timed() { local name=$1; shift; mkdir -p "$RESULTS"; /usr/bin/time -o "$RESULTS/.time-$name" -f "%e\t%M" "$@"; printf '%s\t%s\n' "$name" "$(cat "$RESULTS/.time-$name")" >> "$RESULTS/times.tsv"; }
todo() { wanted "$1" && [ ! -e "$2" ]; }
set -x
todo data "$DATA/emoji.json" && timed emoji $ZF emoji --out "$DATA" --seed 0
todo data "${SMALL#folder:}/emoji.json" && timed emoji $ZF emoji --out "${SMALL#folder:}" --classes 100 --seed 0
if todo train "$MODEL/zfkeras.json"; then
  timed train $ZF train --arch zfnet64 --data "folder:$DATA" --epochs 12 $RECIPE --val-split 0.05 \
    --checkpoint-epochs 1,2,3,4,5,6,7,8,10,12 --no-progress --seed 0 --out "$RUN" --export "$MODEL"
fi
todo evaluate "$RESULTS/evaluate" && timed evaluate $ZF evaluate "$MODEL" --data "folder:$DATA" --out "$RESULTS/evaluate"
# What a consumer gets: plain tf.saved_model.load(...).serve on the native test images, no zfkeras.
todo plain "$RESULTS/plain-tf.json" && timed plain $PYTHON docs/examples/plain_tf_accuracy.py "$MODEL" "$DATA/test" --out "$RESULTS/plain-tf.json"
todo visualize "$RESULTS/visualize" && timed visualize $ZF visualize "$MODEL" --data "folder:$DATA" --split test --layers conv1,conv2,conv3,conv4,conv5 \
  --maps random:16 --seed 0 --out "$RESULTS/visualize"
todo evolution "$RESULTS/evolution" && timed evolution $ZF evolution "$RUN" --data "folder:$DATA" --split test --images 4000 --probe-images 500 \
  --seed 0 --out "$RESULTS/evolution"
if todo invariance "$RESULTS/invariance"; then
  # Ten held-out test images of ten classes spread over the alphabet (the first image of each),
  # named by their class (zf invariance names its outputs after the files).
  mkdir -p "$RESULTS/.invariance-images"
  for d in $(ls -d "$DATA"/test/*/ | awk 'NR % 150 == 1' | head -10); do
    cp "$(ls "$d"*.png | head -1)" "$RESULTS/.invariance-images/$(basename "$d").png"
  done
  images=("$RESULTS"/.invariance-images/*.png)
  timed invariance $ZF invariance "$MODEL" "${images[@]}" --layers conv1,fc7 --out "$RESULTS/invariance"
fi
todo localization "$RESULTS/localization" && timed localization $ZF localization "$MODEL" --data "folder:$DATA" --images 240 --seed 0 --out "$RESULTS/localization"
if todo correspondence "$RESULTS/correspondence"; then
  # parts.json's faces are all twitter-000.png in their class folders. zf correspondence would name
  # them <class>-twitter-000; copied under their class names, the records read as the shipped ones.
  $PYTHON - "$DATA" "$RESULTS/.parts" <<'PY'
import json, os, shutil, sys
data, out = sys.argv[1:]
os.makedirs(out, exist_ok=True)
parts = json.load(open(os.path.join(data, "parts.json")))
for entry in parts["images"]:
    name = entry["file"].split("/")[-2] + ".png"
    shutil.copyfile(os.path.join(data, entry["file"]), os.path.join(out, name))
    entry["file"] = name
json.dump(parts, open(os.path.join(out, "parts.json"), "w"), indent=1)
PY
  timed correspondence $ZF correspondence "$MODEL" --parts "$RESULTS/.parts/parts.json" --layers conv5,fc7 --seed 0 \
    --out "$RESULTS/correspondence"
fi
if wanted transfer || wanted layers; then
  [ -d "$TUX" ] || $PYTHON docs/examples/tuxpaint_folder.py --out "$TUX"  # needs Debian's tuxpaint-stamps-default
fi
if wanted transfer; then
  todo transfer "$RESULTS/transfer-similar" && timed transfer $ZF transfer "$MODEL" --data "folder:$TUX" --split all --per-class 1,3,5 --folds 5 \
    --test-per-class 50 --scratch-steps 200 --seed 0 --out "$RESULTS/transfer-similar"
  todo transfer "$RESULTS/transfer-dissimilar" && timed transfer $ZF transfer "$MODEL" --data mnist_5k --per-class 1,3,5 --folds 5 \
    --scratch-steps 200 --no-flip --seed 0 --out "$RESULTS/transfer-dissimilar"
fi
todo layers "$RESULTS/layers" && timed layers $ZF layers "$MODEL" --data "folder:$TUX" --split all --per-class 5 --seed 0 --out "$RESULTS/layers"
todo layers "$RESULTS/layers-dissimilar" && timed layers $ZF layers "$MODEL" --data mnist_5k --per-class 5 --seed 0 \
    --out "$RESULTS/layers-dissimilar"
for seed in $SEEDS; do
  todo table3 "$RESULTS/table3/seed-$seed" && timed ablate $ZF ablate --arch zfnet64 --data $SMALL $RECIPE --val-split 0.1 --epochs 10 --seed "$seed" \
    --variant base --variant 'without=6,7' --variant 'without=3,4' --variant 'without=3,4,6,7' \
    --runs "out/emoji64-table3/runs-s$seed" --out "$RESULTS/table3/seed-$seed"
  if todo fig6 "$RESULTS/fig6/seed-$seed/evaluate"; then
    # Sec. 4.1: zfnet64 (7x7/2; the base run of Table 3's seed) against alexnet64 (11x11/4), same data and recipe.
    alex="out/emoji64-fig6/alexnet64-s$seed"
    [ -e "$alex.model/zfkeras.json" ] || timed train $ZF train --arch alexnet64 --data $SMALL $RECIPE --val-split 0.1 --epochs 10 --checkpoint-epochs 10 \
      --log-projections 0 --no-progress --seed "$seed" --out "$alex.run" --export "$alex.model"
    mkdir -p "out/emoji64-fig6/s$seed"
    ln -sfn "$PWD/out/emoji64-table3/runs-s$seed/base" "out/emoji64-fig6/s$seed/zfnet64"
    ln -sfn "$PWD/$alex.model" "out/emoji64-fig6/s$seed/alexnet64"
    timed filters $ZF filters "out/emoji64-fig6/s$seed/zfnet64" "out/emoji64-fig6/s$seed/alexnet64" --data $SMALL --out "$RESULTS/fig6/seed-$seed/filters"
    timed evaluate $ZF evaluate "out/emoji64-fig6/s$seed/zfnet64" "out/emoji64-fig6/s$seed/alexnet64" --data $SMALL --crops single \
      --out "$RESULTS/fig6/seed-$seed/evaluate"
  fi
done
if todo within "$RESULTS/transfer-within"; then
  # Yosinski et al.'s split: Fashion-MNIST classes 0-5 train a model, classes 6-9 are the target.
  $PYTHON docs/examples/fashion_split.py --out out/fashion-split
  [ -e out/fashion-6/model.keras ] || timed train $ZF train --arch zfnet_small --data idx:out/fashion-split/first6 --epochs 3 --kernel-init glorot_uniform --dropout 0 \
    --units fc6=512,fc7=512 --log-projections 0 --no-progress --seed 0 --out out/fashion-6
  timed transfer $ZF transfer out/fashion-6 --data idx:out/fashion-split/last4 --per-class 1,3,5,10 --folds 5 --scratch-steps 300 --seed 0 \
    --out "$RESULTS/transfer-within"
fi
# The shipped model's page (zf report): every figure and number of it on the held-out artist's images.
todo report "$RESULTS/report" && timed report $ZF report "$MODEL" --data "folder:$DATA" --parts "$DATA/parts.json" \
  --results "$RESULTS/transfer-similar" --results "$RESULTS/layers" --skip evolution,sanity,faithfulness --seed 0 --out "$RESULTS/report"
wanted findings && timed findings $ZF findings "$RESULTS" --out "$RESULTS/findings"
# The shipped copies: the findings table into docs/reproduction.md and the README (between their
# markers), and the small records and figures into docs/figures/emoji64/.
if wanted publish; then
  # The records name this run's directories; the copies give each the name it has by default here.
  named=(--path "$DATA=out/emoji64" --path "$TUX=out/tuxpaint/photos" --path "$RUN=out/emoji64-run" --path "$MODEL=saved_models/emoji64-zfnet64"
    --path "$RESULTS=out/emoji64-results" --path "${SMALL#folder:}=out/emoji64-c100" --path "out/emoji64-table3=out/emoji64-table3"
    --path "out/emoji64-fig6=out/emoji64-fig6" --path "out/fashion-split=out/fashion-split" --path "out/fashion-6=out/fashion-6")
  for seed in $SEEDS; do named+=(--path "$RESULTS/table3/seed-$seed=out/emoji64-results/table3/seed-$seed"); done
  $PYTHON docs/examples/publish_findings.py "$RESULTS" docs/figures/emoji64 docs/reproduction.md README.md "${named[@]}"
fi
