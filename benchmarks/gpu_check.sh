#!/usr/bin/env bash
# The one prepared GPU check: CUDA tests, the loss and fused-linear benchmarks, the demo
# and the examples' smoke runs on a GPU machine, in one call of at most about 8 minutes.
# Everything lands under $OUT (at most 10 files: progress.log and one log per step).
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine (the device tool)
#   DRY_RUN=1 bash benchmarks/gpu_check.sh       # on a CPU machine: every step, tiny sizes,
#                                                # Triton through its interpreter
#
# It installs nothing from the network: the GPU image has torch, triton, pytest,
# hypothesis, numpy, scipy and matplotlib; the package runs from src/ via PYTHONPATH.
# Optional wheels carried in .whl/ are installed if present: for the Liger columns,
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl liger-kernel
# and name .whl in the device tool's carry (nltk too, if the GPU image lacks it).
# It stops at the first failing step and says where it got to.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
DRY=${DRY_RUN:-0}
if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    export TRITON_INTERPRET=1
    BENCH_SIZES=8x64,4x300
    FL_ARGS=(--tokens 64 --hidden 32 --vocab 500 --repeat 1)
    FL_CHECK=()  # tiny sizes sit under the 64 MiB floor: nothing to assert
    STEPS=5
    # the interpreter is slow: the dry run checks the wiring with a few tests
    TESTS=(tests/test_cuda.py tests/test_triton_backend.py -k "kd_reductions or modules")
else
    DEVICE=cuda
    BENCH_SIZES=256x1000,4096x32000,16384x128000
    # the memory claim at its size: fused KD / LS <= 0.25 extra logits tensors (--check
    # fails the step otherwise: a materialised-logits regression stops the check here)
    FL_ARGS=(--tokens 16384 --hidden 4096 --vocab 128000 --dtype bfloat16 --repeat 3 --compile)
    FL_CHECK=(--check)
    STEPS=100
    # test_cuda.py holds the CUDA-vs-CPU-float64 checks of the fused losses (values and
    # gradients to the dtype's tolerance), their peak memory and the no-sync check
    TESTS=(tests/test_cuda.py tests/test_engine.py tests/test_triton_backend.py
        tests/test_functional.py tests/test_fused_linear.py
        tests/test_fused_linear_label_smoothing.py)
fi

step() { echo "== [$(date +%T)] $*" | tee -a "$OUT/progress.log"; }
run() {  # run NAME LIMIT_S CMD...: log to $OUT/NAME.log; stop the whole check on failure
    local name=$1 limit=$2
    shift 2
    step "$name: $*"
    local start=$SECONDS
    if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        echo "   ok in $((SECONDS - start)) s" | tee -a "$OUT/progress.log"
    else
        local rc=$?
        echo "   FAILED (rc $rc after $((SECONDS - start)) s) at step '$name'; last lines:" |
            tee -a "$OUT/progress.log"
        tail -n 25 "$OUT/$name.log" | tee -a "$OUT/progress.log"
        echo "gpu_check stopped at '$name'" | tee -a "$OUT/progress.log"
        exit 1
    fi
}

: >"$OUT/progress.log"
step "start: dry run $DRY, device $DEVICE, out $OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    run wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target /tmp/gpu-check-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/gpu-check-site"
fi
run env 120 "$PY" -c "
import torch, lsdiffusion
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0))
try:
    import triton; print('triton', triton.__version__)
except ImportError as exc:
    print('no triton:', exc)
try:
    import liger_kernel; print('liger-kernel', getattr(liger_kernel, '__version__', 'present'))
except ImportError:
    print('liger-kernel: not installed (Liger columns skipped)')
assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'no CUDA device'
"
# CUDA tests: the CUDA-marked tests and the loss tests, whose device fixtures take CUDA
run tests 240 "$PY" -m pytest -q -x -p no:cacheprovider -o addopts="" "${TESTS[@]}"
run bench_losses 240 "$PY" benchmarks/bench_losses.py --device "$DEVICE" --gpu-table \
    --sizes "$BENCH_SIZES" --dtypes bfloat16,float32 --repeat 10
run bench_fused_linear 240 "$PY" benchmarks/bench_fused_linear.py --device "$DEVICE" \
    "${FL_ARGS[@]}" "${FL_CHECK[@]}"
run bench_fused_linear_ls 150 "$PY" benchmarks/bench_fused_linear.py --loss ls \
    --device "$DEVICE" "${FL_ARGS[@]}" "${FL_CHECK[@]}"
run demo 150 "$PY" -m lsdiffusion demo --device "$DEVICE" --out "$OUT/demo-out" --no-progress
rm -rf "$OUT/demo-out"  # keep $OUT to a few files; the tables are in demo.log
run examples 200 bash -c "set -e
    '$PY' examples/distill_lm.py --device $DEVICE --steps $STEPS
    '$PY' examples/distill_tokens.py --device $DEVICE --steps $STEPS"
step "done: every step passed"
