#!/usr/bin/env bash
# One-GPU check of the real training and evaluation paths, and the benchmarks, on SmolLM2-135M-Instruct.
#   1. benchmarks/regularizers.py: each regulariser's forward + backward on 2,598 rows × 49,152 classes
#      (the 16 × 512 batch below), the SVD term's Gram and eigen-solve parts, and the SVD term in hidden
#      space (576 = SmolLM2's hidden size), the path the trainer takes for SmolLM2;
#   2. benchmarks/overhead.py: BA-LoRA vs PiSSA step time and peak memory, bf16, at the CPU benchmark's
#      size (4 × 256) and at 16 × 512, the latter also with --svd_eigensolver lobpcg; each run also
#      measures the floor (PiSSA step + one reference forward) and splits the cost above it by term,
#      and its log must say that the SVD term ran in hidden space (checked below); at 16 × 512 also the
#      regulariser rows taken at the LM head against gathered from the logits (--compare_rows);
#      then the N × V sweep on the tiny-llama-256 body (up to a 262,144-class head) into sweep.json;
#   3. benchmarks/generation.py: batched vs one-prompt-at-a-time greedy decoding;
#   4. PiSSA and BA-LoRA, bf16, DeepSpeed ZeRO-2 on one GPU (configs/gpu/*): 128 optimizer steps of
#      16 × ≤512 tokens on 2,048 GSM8K train rows, launched with torchrun;
#   5. each adapter scored on the first $GSM8K_LIMIT GSM8K test rows: accuracy (greedy, 256 new tokens)
#      and the teacher-forced NLL of the reference solutions.
# Writes $OUT_DIR/summary.md (+ summary.json) and one log per step. Needs one CUDA GPU, the
# environment of scripts/setup_env.sh (CUDA torch installed first) and the GSM8K files of the data folder
# ($BALORA_DATA_DIR, default data/: python scripts/fetch_data.py).
#   bash scripts/gpu_check.sh
#   GSM8K_DIR=/data/gsm8k OUT_DIR=/tmp/gpu_check bash scripts/gpu_check.sh
#   bash scripts/gpu_check.sh --dry-run          # print the commands only
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
GSM8K_DIR=${GSM8K_DIR:-${BALORA_DATA_DIR:-data}/gsm8k}
OUT_DIR=${OUT_DIR:-outputs/gpu_check}
GSM8K_LIMIT=${GSM8K_LIMIT:-256}
METHODS=${METHODS:-"pissa ba-lora"}
SEED=${SEED:-42}
DRY_RUN=0
case "${1:-}" in
  "") ;;
  --dry-run) DRY_RUN=1 ;;
  -h|--help)
    echo "usage: bash scripts/gpu_check.sh [--dry-run]   (settings are variables: PY BALORA_DATA_DIR GSM8K_DIR OUT_DIR GSM8K_LIMIT METHODS SEED)"
    echo
    sed -n '2,/^set -/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    exit 0 ;;
  *) echo "error: unknown argument '$1' (usage: bash scripts/gpu_check.sh [--dry-run]; settings are variables: PY GSM8K_DIR OUT_DIR GSM8K_LIMIT METHODS SEED)" >&2; exit 2 ;;
esac

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_VERBOSITY=${TRANSFORMERS_VERBOSITY:-warning}
export PYTHONUNBUFFERED=1

# step NAME COMMAND...: run one step with its output in $OUT_DIR/NAME.log; a failed step is reported
# and the later steps still run (the summary marks what is missing); the script's status is 1 then.
FAILED=()
step() {
  local name=$1; shift
  echo "== $name: $*"
  [ "$DRY_RUN" = 1 ] && return 0
  local start=$SECONDS
  if "$@" > "$OUT_DIR/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - start)) s"
  else
    echo "   FAILED (status $?) in $((SECONDS - start)) s; last lines of $OUT_DIR/$name.log:"
    tail -n 25 "$OUT_DIR/$name.log" | sed 's/^/   | /'
    FAILED+=("$name")
  fi
}

if [ "$DRY_RUN" = 0 ]; then
  for file in train.jsonl test.jsonl; do
    [ -f "$GSM8K_DIR/$file" ] || { echo "error: $GSM8K_DIR/$file not found (python scripts/fetch_data.py fills data/; or set BALORA_DATA_DIR or GSM8K_DIR)" >&2; exit 2; }
  done
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA GPU visible to torch')"
  mkdir -p "$OUT_DIR"
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    "$PY" -c "import torch, transformers, peft, deepspeed; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'| transformers', transformers.__version__, '| peft', peft.__version__, '| deepspeed', deepspeed.__version__)"
  } | tee "$OUT_DIR/environment.txt"
fi
# The benchmarks first: they are short, and a time-limited machine should not lose them to training.
step regularizers_2598 "$PY" benchmarks/regularizers.py --rows 2598 --vocab 49152 --hidden 576 --warmup 2 --repeats 5 \
  --output "$OUT_DIR/regularizers_2598.json"
step overhead_4x256 "$PY" benchmarks/overhead.py --bf16 --warmup 3 --steps 10 --repeats 2 \
  --output "$OUT_DIR/overhead_4x256.json"
step overhead_16x512 "$PY" benchmarks/overhead.py --bf16 --batch 16 --seq_len 512 --warmup 3 --steps 10 --repeats 2 \
  --output "$OUT_DIR/overhead_16x512.json"
# The hidden-space SVD term must be the path that ran for SmolLM2 (a fallback would be logged as "logits space: why").
step svd_path_check grep -q "SVD term in hidden space" "$OUT_DIR/overhead_16x512.log"
step overhead_16x512_lobpcg "$PY" benchmarks/overhead.py --bf16 --batch 16 --seq_len 512 --warmup 3 --steps 10 \
  --repeats 2 --svd_eigensolver lobpcg --output "$OUT_DIR/overhead_16x512_lobpcg.json"
step rows_tap_16x512 "$PY" benchmarks/overhead.py --bf16 --batch 16 --seq_len 512 --compare_rows --warmup 3 \
  --steps 10 --repeats 1 --output "$OUT_DIR/rows_tap_16x512.json"
step sweep "$PY" benchmarks/overhead.py --bf16 --sweep --sweep_rows 1024,4096 --sweep_vocab 49152,262144 \
  --warmup 2 --steps 5 --repeats 1 --output "$OUT_DIR/sweep.json"
step generation "$PY" benchmarks/generation.py --data "$GSM8K_DIR/test.jsonl" --num_prompts 32 \
  --max_new_tokens 256 --output "$OUT_DIR/generation.json"

for method in $METHODS; do
  run_dir=$OUT_DIR/$method
  step "train_$method" "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 train_nlg.py \
    --config "configs/gpu/smollm2_gsm8k_${method}_zero2.yaml" --data_path "$GSM8K_DIR/train.jsonl" \
    --output_dir "$run_dir/train" --seed "$SEED"
  step "gsm8k_$method" "$PY" eval/gsm8k.py --model smollm2-135m-instruct --adapter "$run_dir/train/adapter_lora" \
    --data "$GSM8K_DIR/test.jsonl" --limit "$GSM8K_LIMIT" --max_new_tokens 256 --batch_size 64 \
    --output_dir "$run_dir/eval_gsm8k"
  step "gsm8k_nll_$method" "$PY" eval/gsm8k_nll.py --model smollm2-135m-instruct \
    --adapter "$run_dir/train/adapter_lora" --data "$GSM8K_DIR/test.jsonl" --limit "$GSM8K_LIMIT" \
    --output_dir "$run_dir/eval_gsm8k_nll"
done

[ "$DRY_RUN" = 1 ] && exit 0
"$PY" benchmarks/gpu_check_summary.py "$OUT_DIR" --methods $METHODS
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "failed steps: ${FAILED[*]} (logs in $OUT_DIR)" >&2
  exit 1
fi
