#!/usr/bin/env bash
# Builds the default model from what is available offline: synthetic warps with exact
# labels, teacher-labelled real photos, CPU training (vision warm-up, then the LLM stage), held-out evaluation next
# to the MediaPipe baseline, and packaging into the package resources. About 2 h on 2 CPU cores (vision warm-up
# ~30 min, LLM stage ~45 min, evaluation ~25 min).
# Every step is resumable: re-running skips finished work (synth outputs, cached crops, the last checkpoint).
#   bash scripts/train-default-model.sh [path/to/faces/index.csv]
set -euo pipefail
cd "$(dirname "$0")/.."
INDEX=${1:-../shared/faces/index.csv}
bash scripts/setup-env.sh
A=.venv/bin/aullava
mkdir -p runs/data
$A synth --index "$INDEX" --out runs/data/synth --per-image 8 --held-out 0.2 --seed 17 --gain 2.5
$A teacher --index "$INDEX" --out runs/data/teacher --held-out 0.2 --seed 17 --synth runs/data/synth
$A train --config configs/default-model.yaml
# held-out identities: one half calibrates p(present), the other half is what the reports show
.venv/bin/python scripts/split_held_out.py runs/data/synth/held_out.csv runs/data/teacher/real_held_out.csv
for half in calib test; do
  printf 'type: manifest\npath: runs/data/synth/held_out_%s.csv\nask: all\n' "$half" > "runs/eval-synth-$half.yaml"
  printf 'type: manifest\npath: runs/data/teacher/real_held_out_%s.csv\nask: all\n' "$half" > "runs/eval-teacher-$half.yaml"
done
$A calibrate --data runs/eval-synth-calib.yaml --model runs/default-model --limit 400
$A eval --data runs/eval-synth-test.yaml --model runs/default-model --limit 150 --baseline mediapipe \
  --out runs/report-synth
$A eval --data runs/eval-teacher-test.yaml --model runs/default-model --limit 150 --baseline mediapipe-raw \
  --formats binary continuous --out runs/report-real
mkdir -p src/aullava/resources/default_model
rm -f src/aullava/resources/default_model/*
cp runs/default-model/{config.json,projector.safetensors,geometry.safetensors,adapter_config.json,adapter_model.safetensors} \
  src/aullava/resources/default_model/
echo "packaged runs/default-model into src/aullava/resources/default_model"
