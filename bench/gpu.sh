#!/usr/bin/env bash
# GPU throughput of camlabel on one CUDA machine, in one run of under 5 minutes.
#
# What it runs, each step bounded by its own timeout:
#   1. the forward variants of EfficientNet-Lite0 at 448 px (prepared or as loaded, NCHW or
#      channels-last, fp32, bf16 or fp16 autocast, batch 256) and the variant the Localizer's
#      probe picks (camcore.forward_choice);
#   2. bench/pipeline.py --device cuda: the streaming pipeline (loader processes, box processes)
#      against the bare forward pass of the same network -> pipeline_vs_forward;
#   3. bench/jobs.py: the infer job end to end through a real worker process (Redis + PostgreSQL
#      when both are reachable on 127.0.0.1, else the embedded worker on SQLite) vs the pipeline
#      alone;
#   4. the CUDA tests (pytest -m cuda tests/camcore);
# then prints the ratios again, together, at the end. The step timeouts add up to 290 s.
#
# Images: $CAMLABEL_BENCH_DATASET, else .bench-data/raccoon-kangaroo in the checkout, laid out
# like the shared collection. To carry a few hundred photos to a GPU machine with the checkout:
#
#   mkdir -p .bench-data/raccoon-kangaroo/{raccoon,kangaroo}/images
#   cp ../shared/datasets/raccoon-kangaroo/raccoon/images/*.jpg  .bench-data/raccoon-kangaroo/raccoon/images/
#   cp ../shared/datasets/raccoon-kangaroo/kangaroo/images/*.jpg .bench-data/raccoon-kangaroo/kangaroo/images/
#
# (.bench-data/ is git-ignored: pass it along with the working tree, e.g. the device runner's
# carry list.) bench/jobs.py and the tests read ../shared/datasets/raccoon-kangaroo: when that
# is absent the script links it to the carried folder.
#
# Usage: bench/gpu.sh            (PYTHON=path/to/python to pick the interpreter; default .venv/bin/python)
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DATA="${CAMLABEL_BENCH_DATASET:-$PWD/.bench-data/raccoon-kangaroo}"
if [ ! -d "$DATA/raccoon/images" ] && [ -d ../shared/datasets/raccoon-kangaroo/raccoon/images ]; then
  DATA="$(cd ../shared/datasets/raccoon-kangaroo && pwd)"
fi
if [ ! -d "$DATA/raccoon/images" ]; then
  echo "no images: set CAMLABEL_BENCH_DATASET or fill .bench-data/raccoon-kangaroo (see the header)" >&2
  exit 2
fi
export CAMLABEL_BENCH_DATASET="$DATA"
if [ ! -e ../shared/datasets/raccoon-kangaroo ]; then
  mkdir -p ../shared/datasets 2>/dev/null && ln -s "$DATA" ../shared/datasets/raccoon-kangaroo 2>/dev/null \
    || echo "note: cannot link ../shared/datasets/raccoon-kangaroo; bench/jobs.py and the photo tests will not find the images"
fi
N_IMAGES="$(find "$DATA" -name '*.jpg' | wc -l)"
LOG="$(mktemp -d)"
echo "python=$PY images=$N_IMAGES ($DATA) logs=$LOG"
"$PY" - <<'EOF' || { echo "no CUDA device: nothing to measure" >&2; exit 3; }
import torch, sys
if not torch.cuda.is_available():
    sys.exit(1)
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, cudnn {torch.backends.cudnn.version()}")
EOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true

echo "== 1. forward variants (EfficientNet-Lite0, 448 px) =="
timeout 45 "$PY" - <<'EOF' 2>&1 | tee "$LOG/variants.txt"
import torch
from camcore.forward_choice import ForwardVariant, probe_forward
from camcore.prepare import example_batch, prepare_for_inference
from camcore.models import ModelSpec, build_model
from camcore.localizer import Localizer
from camcore.transforms import Normalizer

torch.backends.cudnn.benchmark = True
spec = ModelSpec(class_names=["raccoon", "kangaroo"], input_size=448)
model = build_model(spec, weights="imagenet").cuda().eval()
prepared = {}
def network(v):
    if not v.prepared:
        return model.to(memory_format=v.memory_format)
    if "net" not in prepared:
        prepared["net"], _ = prepare_for_inference(model, Normalizer(spec, "cuda", v.memory_format)(example_batch(448)), memory_format=v.memory_format)
    return prepared["net"].to(memory_format=v.memory_format)
variants = [ForwardVariant(p, cl, d, b) for b in (256,) for d in (torch.bfloat16, torch.float16, None)
            for p in (True, False) for cl in (True, False)]
timings = probe_forward(network, 448, torch.device("cuda"), variants, rounds=4, warmup=2)
best = max(t.images_per_s for t in timings if t.max_rel_diff <= 0.05)
for t in sorted(timings, key=lambda t: -t.images_per_s):
    print(f"{t.variant.describe():40s} {t.images_per_s:9.1f} images/s  vs_best={t.images_per_s / best:.3f}  logit_rel_diff={t.max_rel_diff:.2e}")
loc = Localizer(model, spec, device="cuda", batch_size=64)
print(f"localizer_probe_choice={loc.variant.describe()}")
print(f"fastest_bare_forward_images_per_s={best:.1f}")
EOF

echo "== 2. bench/pipeline.py --device cuda =="
timeout 90 "$PY" bench/pipeline.py --device cuda --images "$(( N_IMAGES < 364 ? N_IMAGES : 364 ))" --batch-size 64 \
  --repeats 2 --skip-libraries 2>&1 | tee "$LOG/pipeline.txt"

echo "== 3. infer job end to end (bench/jobs.py) =="
timeout 85 "$PY" bench/jobs.py --images "$(( N_IMAGES < 358 ? N_IMAGES : 358 ))" --chunk 256 --repeat 1 2>&1 | tee "$LOG/jobs.txt"

echo "== 4. CUDA tests =="
timeout 70 "$PY" -m pytest -q -m cuda tests/camcore -p no:cacheprovider 2>&1 | tail -15 | tee "$LOG/tests.txt"

echo "== ratios =="
grep -h "fastest_bare_forward_images_per_s\|localizer_probe_choice" "$LOG/variants.txt"
grep -h "^variant=\|variant=\|pipeline, whole runs\|forward only, whole runs\|pipeline_vs_forward" "$LOG/pipeline.txt" | sed 's/^device=.*variant=/variant=/'
grep -h "images/s\|overhead" "$LOG/jobs.txt"
tail -1 "$LOG/tests.txt"
BEST="$(sed -n 's/^fastest_bare_forward_images_per_s=//p' "$LOG/variants.txt")"
PIPE="$(sed -n 's/^pipeline, whole runs *: *\([0-9.]*\).*/\1/p' "$LOG/pipeline.txt")"
E2E="$(sed -n 's/^infer job e2e.*best *\([0-9.]*\) images.*/\1/p' "$LOG/jobs.txt")"
[ -n "$BEST" ] && [ -n "$PIPE" ] && awk -v p="$PIPE" -v b="$BEST" 'BEGIN{printf "pipeline_vs_fastest_forward=%.3f (target >= 0.85)\n", p / b}'
[ -n "$BEST" ] && [ -n "$E2E" ] && awk -v e="$E2E" -v b="$BEST" 'BEGIN{printf "infer_job_vs_fastest_forward=%.3f (target >= 0.85)\n", e / b}'
exit 0
