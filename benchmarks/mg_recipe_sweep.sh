# The mammography recipe sweep (issue 13) on the device machine, from the repository root.
# Device tool call: command "bash benchmarks/mg_recipe_sweep.sh", carry [".gpu"], timeout_s 540.
# .gpu/ is the pack built by `benchmarks/mg_recipe_sweep.py --build-from ... --lite0-pth ...`.
set -o pipefail
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
PYTHONUNBUFFERED=1 python3 benchmarks/mg_recipe_sweep.py --pack .gpu --out "$OUT" 2>&1 | tee "$OUT/sweep.log"
