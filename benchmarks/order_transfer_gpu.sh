#!/bin/bash
# Experiment (b) trained to convergence on one GPU: 2 checkpoints x 5 label draws, one process each,
# all at once (the models are small; one process leaves the GPU mostly idle), plus the many-labels
# model on draw 0. Inputs in $1 (default runs/device): wide_refs.npz (benchmarks/order_transfer.py
# prepare), small.ckpt, large.ckpt, whl/ (wheels the GPU image lacks: ase, vesin, geometric-algebra-attention). Results to $2/results.tgz.
set -u
D=${1:-runs/device}; O=${2:-/tmp/order_transfer}; mkdir -p "$O/res"
if ! python3 -c "import ase, vesin, geometric_algebra_attention" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$D"/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
nvidia-smi -L
R="python3 benchmarks/order_transfer.py run --refs $D/wide_refs.npz --device cuda"
# smoke test: fail in seconds, not minutes
$R --checkpoint "$D/small.ckpt" --out "$O/smoke" --head-steps 5 --full-steps 2 --many-labels 2000 --many-steps 2 --curve 1 || exit 1
for ck in small large; do for s in 0 1 2 3 4; do
  extra=""; [ "$s" = 0 ] && extra="--many-labels 40000 --many-steps 3000"
  timeout "${BUDGET:-360}" $R --checkpoint "$D/$ck.ckpt" --out "$O/res/${ck}_s$s" --seeds "$s" \
    --curve 150,300,600,1000,2000,3000 $extra > "$O/res/${ck}_s$s.log" 2>&1 &
done; done
wait
python3 benchmarks/order_transfer.py summarise "$O"/res/*_s? > "$O/res/summary.md"
cat "$O/res/summary.md"; tail -n 3 "$O"/res/*.log
tar czf "$O/results.tgz" -C "$O" res
