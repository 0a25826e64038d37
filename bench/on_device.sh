#!/usr/bin/env bash
# The GPU checks, on a lent CUDA machine (the workplace's device tool runs this from the repository
# root, with .whl/ carried):  bash bench/on_device.sh [tests] [bench]
#
# That machine has python3 with torch, torchvision, pyarrow, numpy, scipy, PIL, typer and rich, but
# not duckdb, deltalake, arro3 or faiss, and it cannot reach a package index. bench/pack_site.sh
# packs them here into .whl/site.tar.xz (~56 MB, under the 64 MiB a call may carry); this script
# unpacks them once per machine into /tmp/site. Results land in $OUT (the tool brings them back).
set -uo pipefail
OUT=${OUT:-/tmp/embstore-device}
mkdir -p "$OUT"
if [ -f .whl/site.tar.xz ] && [ ! -d /tmp/site/duckdb ]; then
  mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site || exit 1
fi
export PYTHONPATH="$PWD:$PWD/cli:/tmp/site" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python3 - <<'EOF'
import duckdb, deltalake, faiss, numpy, pyarrow, torch, torchvision
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
      f"torchvision {torchvision.__version__}, duckdb {duckdb.__version__}, deltalake {deltalake.__version__}, "
      f"pyarrow {pyarrow.__version__}, numpy {numpy.__version__}, faiss {faiss.__version__} "
      f"({faiss.get_num_gpus()} GPU), {torch.cuda.get_device_name(0)}")
EOF

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tests bench)
for what in "${steps[@]}"; do
  case $what in
  tests)
    timeout 300 python3 -m pytest tests/test_gpu.py -p no:cacheprovider -n 0 -rs -s -q --durations=0 2>&1 |
      tee "$OUT/gpu_tests.log" | grep -v "^$"
    ;;
  bench)
    # ingest (decode workers, pinned batches, hooks, commits) vs the bare model(x) loop on batches
    # already on the GPU; the marginal rate takes out the fixed costs (model load, worker start)
    for cfg in "resnet50 fp16" "resnet50 bf16" "densenet121 fp16" "resnet18 fp16" "resnet50 off"; do
      set -- $cfg
      timeout 150 python3 bench/engines.py --images 4096 --model "$1" --device cuda --amp "$2" --raw \
        --skip ray,nodes 2>&1 | tee -a "$OUT/engines.log" | grep -v "^$"
    done
    ;;
  esac
done
