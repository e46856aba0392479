# shellcheck shell=bash
# Shared helpers of the reproduction scripts (sourced, not run): flags, run folders, completion
# markers, stages, the copy of small result files, and the plan summary.
#
# A script does:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   lib_parse_args "$@"
#   for seed in $SEEDS; do
#     if run_begin <study> <run-name> "$seed" <estimated seconds>; then
#       stage train  $PY train_nlg.py ... --output_dir "$RUN_OUT/train" --seed "$seed"
#       stage eval_gsm8k $PY eval/gsm8k.py ... --output_dir "$RUN_OUT/eval_gsm8k"
#       run_finish "$RUN_OUT/train" gsm8k="$RUN_OUT/eval_gsm8k"
#     fi
#   done
#   lib_summary
#
# Layout: checkpoints and adapters go to $OUTPUTS_DIR/<study>/<run>/seed<k>/ (git-ignored); the
# small files (config.yaml, run.json, metrics.json, log_history.json, eval/<bench>.json) are copied
# to $RESULTS_DIR/<study>/<run>/seed<k>/, and DONE is written there after every stage succeeded.
# Each stage also leaves a marker in the outputs folder, so an interrupted run resumes at the stage
# that failed; a run with DONE is skipped entirely. `touch $OUTPUTS_DIR/STOP` makes a running sweep
# exit (status 3) before its next run.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

DRY_RUN=0
REHEARSE=0
RESULTS_DIR_SET=0
OUTPUTS_DIR_SET=0
SEEDS_SET=0
ONLY=""
RESULTS_DIR=${RESULTS_DIR:-results}
OUTPUTS_DIR=${OUTPUTS_DIR:-outputs}
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
# The benchmark data folder: GLUE TSVs, GSM8K, MATH, MBPP, MT-Bench (python scripts/fetch_data.py fills it and
# lists the layout). A relative path is taken from the repository root. The configs name their files under
# data/, the default; the scripts pass paths in $BALORA_DATA_DIR as flags, and results record data/<file>.
BALORA_DATA_DIR=${BALORA_DATA_DIR:-data}
export BALORA_DATA_DIR

PLAN_TOTAL=0
PLAN_DONE=0
PLAN_TODO=0
PLAN_EST_S=0
RUN_ID=""
RUN_OUT=""
RUN_RES=""

lib_usage() {
  cat <<EOF
usage: $(basename "$0") [--dry-run] [--rehearse] [--seeds "42 1024 2024"] [--only REGEX] [--results_dir DIR] [--outputs_dir DIR]
  --dry-run      print the plan (runs, configs, commands, outputs) and what is already done; run nothing
  --rehearse     run every stage for real at toy scale on CPU: the paper models and hub datasets replaced
                 by tiny stand-ins (balora/repro/rehearsal.py), results under outputs/rehearsal/, first seed only
  --seeds        seed list (default: "$SEEDS")
  --only REGEX   only runs whose id <study>/<run>/seed<k> matches the (grep -E) regex
  --results_dir  small result files, one folder per run and seed (default: $RESULTS_DIR)
  --outputs_dir  checkpoints and adapters, git-ignored (default: $OUTPUTS_DIR)
Variables at the top of the script (models, methods, ranks, GPUs) can also be set in the environment.
EOF
}

# Filled before a real run by a dry run of the same command, for the "[run ] ... k of N" progress line.
AHEAD_TODO=0
AHEAD_EST_S=0
STARTED=0
STARTED_EST_S=0

lib_parse_args() {
  local original_args=("$@")
  while [ $# -gt 0 ]; do
    case "$1" in
      --seeds|--only|--results_dir|--outputs_dir)
        if [ $# -lt 2 ] || [[ "$2" == --* ]]; then
          echo "error: $1 needs a value (see --help)" >&2; exit 2
        fi ;;
    esac
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      --rehearse) REHEARSE=1 ;;
      --seeds) SEEDS="$2"; SEEDS_SET=1; shift ;;
      --only) ONLY="$2"; shift ;;
      --results_dir) RESULTS_DIR="$2"; RESULTS_DIR_SET=1; shift ;;
      --outputs_dir) OUTPUTS_DIR="$2"; OUTPUTS_DIR_SET=1; shift ;;
      -h|--help) lib_usage; exit 0 ;;
      *) echo "error: unknown argument $1" >&2; lib_usage >&2; exit 2 ;;
    esac
    shift
  done
  if [ -z "${SEEDS// /}" ]; then
    echo "error: empty seed list" >&2; exit 2
  fi
  if [ "$REHEARSE" = 1 ]; then
    rehearse_setup
  fi
  if [ "$DRY_RUN" = 1 ]; then
    echo "# $(basename "$0") plan (dry run): seeds=[$SEEDS] results=$RESULTS_DIR outputs=$OUTPUTS_DIR"
  elif [ -z "${LIB_PLANNING:-}" ]; then
    # Count what is left (and its estimated time) once, so that each run can say where the sweep is.
    local plan
    plan=$(LIB_PLANNING=1 bash "$0" "${original_args[@]}" --dry-run 2>/dev/null | grep '^# plan:' || true)
    if [[ "$plan" =~ ([0-9]+)\ to\ do(.*\ ([0-9]+)\ s\ =)? ]]; then
      AHEAD_TODO=${BASH_REMATCH[1]}
      AHEAD_EST_S=${BASH_REMATCH[3]:-0}
      echo "$plan"
    fi
  fi
}

# progress_note EST: sets PROGRESS_NOTE to "; k of N[, ~T of estimated work left incl. this run]"
# for the run starting now (not in a subshell: it counts the runs started).
PROGRESS_NOTE=""
progress_note() {
  local est=$1 left
  STARTED=$((STARTED + 1))
  PROGRESS_NOTE=""
  if [ "$AHEAD_TODO" -le 0 ]; then
    return 0
  fi
  PROGRESS_NOTE="; $STARTED of $AHEAD_TODO"
  if [ "$AHEAD_EST_S" -gt 0 ]; then
    left=$(awk -v s="$((AHEAD_EST_S - STARTED_EST_S))" \
      'BEGIN { if (s < 0) s = 0; if (s < 3600) printf "%d min", (s + 59) / 60; else printf "%.1f h", s / 3600 }')
    PROGRESS_NOTE+=", ~$left of estimated work left incl. this run"
  fi
  STARTED_EST_S=$((STARTED_EST_S + est))
}

# run_begin STUDY RUN SEED [EST_SECONDS]: 0 = this run has to be (or would be) run now; 1 = skip it
# (filtered out by --only, or finished: DONE present). Sets RUN_ID, RUN_OUT, RUN_RES.
run_begin() {
  local study=$1 run=$2 seed=$3 est=${4:-0}
  RUN_ID="$study/$run/seed$seed"
  RUN_OUT="$OUTPUTS_DIR/$RUN_ID"
  RUN_RES="$RESULTS_DIR/$RUN_ID"
  if [ -n "$ONLY" ] && ! grep -Eq -- "$ONLY" <<<"$RUN_ID"; then
    return 1
  fi
  PLAN_TOTAL=$((PLAN_TOTAL + 1))
  if [ -f "$RUN_RES/DONE" ]; then
    PLAN_DONE=$((PLAN_DONE + 1))
    echo "[done] $RUN_ID"
    return 1
  fi
  # A graceful stop between runs (a killed run leaves a half-written outputs folder behind).
  if [ "$DRY_RUN" != 1 ] && [ -f "$OUTPUTS_DIR/STOP" ]; then
    echo "# $OUTPUTS_DIR/STOP exists: stopped before $RUN_ID; finished runs are kept." \
         "Delete the file and run the same command to resume." >&2
    exit 3
  fi
  PLAN_TODO=$((PLAN_TODO + 1))
  PLAN_EST_S=$((PLAN_EST_S + est))
  if [ "$DRY_RUN" = 1 ]; then
    if [ "$est" -gt 0 ]; then echo "[todo] $RUN_ID  (est. ${est} s)"; else echo "[todo] $RUN_ID"; fi
  else
    progress_note "$est"
    echo "[run ] $RUN_ID  ($(date '+%H:%M:%S')$PROGRESS_NOTE)"
    mkdir -p "$RUN_OUT"
  fi
  return 0
}

# require_file PATH: a config the run needs; in a dry run a missing one is flagged, not fatal.
require_file() {
  if [ ! -f "$1" ]; then
    if [ "$DRY_RUN" = 1 ]; then
      echo "    !! missing file: $1"
    else
      echo "error: $1 not found (needed by $RUN_ID)" >&2
      exit 1
    fi
  fi
}

# stage NAME CMD...: run CMD once per run (a marker in the outputs folder skips it on resume).
stage() {
  local name=$1; shift
  local marker="$RUN_OUT/.stage_${name}.done"
  if [ "$DRY_RUN" = 1 ]; then
    printf '    %-12s' "$name:"; printf ' %q' "$@"; printf '\n'
    return 0
  fi
  local fingerprint
  fingerprint=$(stage_fingerprint "$@")
  if [ -f "$marker" ]; then
    if [ "$(cat "$marker")" = "$fingerprint" ]; then
      echo "    $name: already done"
      return 0
    fi
    # A stale stage (e.g. after a config was edited and its results folder deleted) must not be
    # reused silently: its outputs were made by another command or config.
    echo "error: $RUN_OUT holds a finished '$name' stage of $RUN_ID made with another command or" \
         "config file than now ($*). Delete $RUN_OUT to rerun it with the current one." >&2
    exit 1
  fi
  # A sweep killed after the command finished (its --output_dir holds metrics.json, which the entry
  # points write last) but before the marker was written: the same command, started before and
  # finished after the .started note, is done. Rerunning it would meet its own finished run.
  local started="$RUN_OUT/.stage_${name}.started" arg previous="" out_dir=""
  for arg in "$@"; do
    [ "$previous" = --output_dir ] && out_dir=$arg
    previous=$arg
  done
  if [ -n "$out_dir" ] && [ -f "$started" ] && [ "$(cat "$started")" = "$fingerprint" ] \
     && [ "$out_dir/metrics.json" -nt "$started" ]; then
    echo "    $name: finished before the interruption"
    echo "$fingerprint" >"$marker"
    return 0
  fi
  echo "$fingerprint" >"$started"
  echo "    $name: $*"
  local t0=$SECONDS
  "$@"
  echo "    $name: ok ($((SECONDS - t0)) s)"
  echo "$fingerprint" >"$marker"
}

# stage_fingerprint CMD...: sha256 of the command line and of the contents of its config files
# (arguments that name an existing .yaml/.yml/.json file), stored in the stage marker.
stage_fingerprint() {
  {
    printf '%q ' "$@"; printf '\n'
    local arg
    for arg in "$@"; do
      case "$arg" in
        *.yaml|*.yml|*.json) [ -f "$arg" ] && { printf '%s\n' "$arg"; cat "$arg"; } ;;
      esac
    done
  } | sha256sum | cut -d' ' -f1
}

KEEP_ITEM_SCORES=${KEEP_ITEM_SCORES:-gsm8k_nll gsm8k math dev}

# run_finish TRAIN_DIR [BENCH=EVAL_DIR ...]: copy the small files of a finished run into its results
# folder (eval metrics as eval/<bench>.json) and write DONE. Missing required files are an error.
run_finish() {
  local train_dir=$1; shift
  if [ "$DRY_RUN" = 1 ]; then
    echo "    -> $RUN_RES/{config.yaml,run.json,metrics.json,log_history.json$( [ $# -gt 0 ] && printf ',eval/%s.json' "${@%%=*}")}, DONE"
    return 0
  fi
  mkdir -p "$RUN_RES"
  local f
  for f in config.yaml run.json metrics.json; do
    if [ ! -f "$train_dir/$f" ]; then
      echo "error: $train_dir/$f missing after training $RUN_ID; the training script must write it" >&2
      exit 1
    fi
    cp "$train_dir/$f" "$RUN_RES/$f"
  done
  [ -f "$train_dir/log_history.json" ] && cp "$train_dir/log_history.json" "$RUN_RES/"
  local pair bench dir
  for pair in "$@"; do
    bench=${pair%%=*}; dir=${pair#*=}
    if [ ! -f "$dir/metrics.json" ]; then
      echo "error: $dir/metrics.json missing after evaluating $bench for $RUN_ID" >&2
      exit 1
    fi
    mkdir -p "$RUN_RES/eval"
    cp "$dir/metrics.json" "$RUN_RES/eval/$bench.json"
    # Per-item records of the benches in KEEP_ITEM_SCORES go along (GSM8K NLL: one number per item;
    # GSM8K and MATH: each generation with both readings, so every score can be re-graded; GLUE dev:
    # each prediction), and paired comparisons (aggregate_results.py *_paired) regenerate from results/.
    if [[ " $KEEP_ITEM_SCORES " == *" $bench "* ]] && [ -f "$dir/samples.jsonl" ]; then
      cp "$dir/samples.jsonl" "$RUN_RES/eval/$bench.samples.jsonl"
    fi
  done
  # Data files read from another folder are recorded as data/<file>, as with the default folder (the
  # same file: its sha256 is recorded beside it), so seeds run from different folders compare equal.
  if [ "$BALORA_DATA_DIR" != data ]; then
    "$PY" scripts/fetch_data.py --rewrite-provenance "$RUN_RES" >/dev/null
  fi
  date -u '+%Y-%m-%dT%H:%M:%SZ' > "$RUN_RES/DONE"
  echo "[ok  ] $RUN_ID -> $RUN_RES"
}

lib_summary() {
  local hours
  hours=$(awk -v s="$PLAN_EST_S" 'BEGIN { printf "%.2f", s / 3600 }')
  if [ "$PLAN_EST_S" -gt 0 ]; then
    echo "# plan: $PLAN_TOTAL runs, $PLAN_DONE done, $PLAN_TODO to do; estimated time of the runs to do: ${PLAN_EST_S} s = ${hours} h"
  else
    echo "# plan: $PLAN_TOTAL runs, $PLAN_DONE done, $PLAN_TODO to do"
  fi
}

# --- the rehearsal (--rehearse) ------------------------------------------------------------------------
# The same script, every stage for real, at toy scale: BALORA_REHEARSAL=1 makes the loaders replace each
# paper model and hub dataset by its stand-in (balora/repro/rehearsal.py); the configs are used unmodified, so
# a config defect fails here as it would on the real data. Only scale and device flags are added.
TRAIN_EXTRA=()
GLUE_EXTRA=()
# The NLG models whose rehearsal trains under ZeRO-3 instead of the configs' ZeRO-2 (one per table).
REHEARSE_ZERO3_MODELS=${REHEARSE_ZERO3_MODELS:-gemma-7b}
rehearse_setup() {
  export BALORA_REHEARSAL=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  [ "$RESULTS_DIR_SET" = 1 ] || RESULTS_DIR=outputs/rehearsal/results
  [ "$OUTPUTS_DIR_SET" = 1 ] || OUTPUTS_DIR=outputs/rehearsal/outputs
  [ "$SEEDS_SET" = 1 ] || SEEDS=${SEEDS%% *}
  GPUS=cpu2
  GLUE_DIR=""
  TRAIN_EXTRA=(--max_steps 2 --logging_steps 1 --bf16 false --use_cpu true)
  GLUE_EXTRA=(--max_train_samples 32 --max_eval_samples 40 --num_train_epochs 1 --bf16 false --use_cpu true)
  EVAL_EXTRA="--limit 2 --max_new_tokens 8 --batch_size 2 ${EVAL_EXTRA:-}"
  EVAL_ARGS[math]="$(eval_data_flag math/test.jsonl) --max_new_tokens 1024"
  EVAL_ARGS[mt_bench]+=" --judge_prompts tests/fixtures/eval/mt_bench_judge_prompts.jsonl"
  EVAL_ARGS[mt_bench]+=" --reference_answers tests/fixtures/eval/mt_bench_reference.jsonl"
  echo "# rehearsal: tiny stand-ins of the paper models and datasets; results in $RESULTS_DIR"
}

# rehearsal_judge_args: start (once) the rehearsal's MT-Bench judge on 127.0.0.1 and print its flags.
REHEARSAL_JUDGE_PID=""
rehearsal_judge_args() {
  if [ -z "$REHEARSAL_JUDGE_PID" ]; then
    local port_file
    port_file=$(mktemp)
    "$PY" scripts/rehearsal_judge.py --port_file "$port_file" &
    REHEARSAL_JUDGE_PID=$!
    trap 'kill $REHEARSAL_JUDGE_PID 2>/dev/null || true' EXIT
    for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.1; done
    REHEARSAL_JUDGE_PORT=$(cat "$port_file")
    rm -f "$port_file"
    export REHEARSAL_JUDGE_KEY=rehearsal
  fi
  echo "--judge_base_url http://127.0.0.1:$REHEARSAL_JUDGE_PORT/v1 --judge_model rehearsal-judge --judge_api_key_env REHEARSAL_JUDGE_KEY"
}

# --- NLG helpers (nlg_table.sh, rank_sweep.sh, ablation.sh, loss_curves.sh, mini.sh) ---
# model ids, the launcher, which benchmarks follow which training subset, and the eval commands.

declare -A MODEL_ID=(
  [llama2-7b]=meta-llama/Llama-2-7b-hf
  [mistral-7b]=mistralai/Mistral-7B-v0.1
  [gemma-7b]=google/gemma-7b
  [llama2-13b]=meta-llama/Llama-2-13b-hf
  [llama3-8b]=meta-llama/Meta-Llama-3-8B
  [llama3-70b]=meta-llama/Meta-Llama-3-70B
  [qwen1.5-7b]=Qwen/Qwen1.5-7B
  [yi1.5-34b]=01-ai/Yi-1.5-34B
  [smollm2]=smollm2-135m-instruct
)
declare -A SUBSET_BENCHES=([metamath]="gsm8k math" [python]="humaneval mbpp" [conversation]="mt_bench")
# Paper protocol: greedy, 1024 new tokens (docs/method.md §5). The evaluators load their hub datasets unless
# EVAL_DATA_DIR holds local copies (gsm8k/test.jsonl, math/test.jsonl, mbpp/MbppPlus.jsonl,
# mt_bench/question.jsonl: the layout of the data folder, so EVAL_DATA_DIR=$BALORA_DATA_DIR uses it).
# MATH is the exception: hendrycks/competition_math was taken off the hub (2025), so it is read from the
# data folder unless EVAL_DATA_DIR names another (the rehearsal uses the hub id's stand-in instead).
EVAL_DATA_DIR=${EVAL_DATA_DIR:-}
eval_data_flag() { if [ -n "$EVAL_DATA_DIR" ]; then echo "--data $EVAL_DATA_DIR/$1"; fi; }
declare -A EVAL_ARGS=(
  [gsm8k]="$(eval_data_flag gsm8k/test.jsonl) --max_new_tokens 1024"
  [gsm8k_nll]="$(eval_data_flag gsm8k/test.jsonl)"
  [math]="--data ${EVAL_DATA_DIR:-$BALORA_DATA_DIR}/math/test.jsonl --max_new_tokens 1024"
  [humaneval]="--max_new_tokens 1024"
  [mbpp]="$(eval_data_flag mbpp/MbppPlus.jsonl) --max_new_tokens 1024"
  [mt_bench]="$(eval_data_flag mt_bench/question.jsonl) --max_new_tokens 1024"
)

# The multi-GPU launcher for training (DeepSpeed ZeRO-2 as in the paper; the config file sets it).
nlg_launcher() {
  if [ "${GPUS:-}" = "cpu" ]; then
    echo "$PY"
  elif [ "${GPUS:-}" = "cpu2" ]; then  # two CPU processes (gloo): the rehearsal of a multi-GPU launch
    echo "$PY -m torch.distributed.run --nproc_per_node 2 --master_port ${MASTER_PORT:-29500}"
  else
    echo "deepspeed --include localhost:${GPUS} --master_port ${MASTER_PORT:-29500}"
  fi
}

# nlg_eval_stages MODEL METHOD BENCHES...: one stage per benchmark on the trained run in $RUN_OUT/train.
# Adapters: adapter_lora/ applies to the original base model (PiSSA converted to plain LoRA);
# Full FT saves the whole model in merged/.
nlg_eval_stages() {
  local model=$1 method=$2; shift 2
  local bench target=()
  if [ "$method" = full ]; then
    target=(--model "$RUN_OUT/train/merged")
  else
    target=(--model "${MODEL_ID[$model]}" --adapter "$RUN_OUT/train/adapter_lora")
  fi
  for bench in "$@"; do
    local judge=""
    if [ "$REHEARSE" = 1 ] && [ "$bench" = mt_bench ] && [ "$DRY_RUN" != 1 ]; then
      rehearsal_judge_args >/dev/null  # starts the judge in this shell (not in a subshell)
      judge=$(rehearsal_judge_args)
    fi
    # shellcheck disable=SC2086  # EVAL_ARGS holds several words on purpose
    stage "eval_$bench" "$PY" "eval/$bench.py" "${target[@]}" ${EVAL_ARGS[$bench]} ${EVAL_EXTRA:-} $judge \
      --output_dir "$RUN_OUT/eval_$bench"
  done
}

# nlg_finish BENCHES...: copy train + eval metrics into the results folder, write DONE.
nlg_finish() {
  local pairs=() bench
  for bench in "$@"; do pairs+=("$bench=$RUN_OUT/eval_$bench"); done
  run_finish "$RUN_OUT/train" "${pairs[@]}"
}

# nlg_train_and_eval MODEL METHOD SUBSET SEED [EXTRA TRAIN FLAGS...]: train with
# ${NLG_CONFIG_DIR:-configs/nlg}/<model>_<subset>_<method>.yaml, evaluate on the subset's benchmarks.
nlg_train_and_eval() {
  local model=$1 method=$2 subset=$3 seed=$4; shift 4
  local cfg="${NLG_CONFIG_DIR:-configs/nlg}/${model}_${subset}_${method}.yaml"
  require_file "$cfg"
  local extra=("$@" "${TRAIN_EXTRA[@]}")
  if [ "$REHEARSE" = 1 ] && [[ " $REHEARSE_ZERO3_MODELS " == *" $model "* ]]; then
    extra+=(--deepspeed configs/deepspeed/zero3.json)
  fi
  # PiSSA-initialised methods: one decomposition per model and rank, in a folder named by both (a
  # command-line --lora_r, as in the rank sweep, names its own), made once on one process before training
  # (ZeRO-3 cannot decompose partitioned weights). train_nlg.py refuses a folder made for other settings.
  if [ "$method" = pissa ] || [ "$method" = ba-lora ]; then
    local r
    r=$(flag_value --lora_r "${extra[@]}")
    [ -n "$r" ] || r=$(sed -n 's/^lora_r: *\([0-9]*\).*/\1/p' "$cfg" 2>/dev/null | head -1)
    local init=(--init_dir "$OUTPUTS_DIR/pissa_init/${model}_r${r:-unknown}")
    extra+=("${init[@]}")
    stage pissa_init "$PY" train_nlg.py --config "$cfg" --output_dir "$RUN_OUT/pissa_init" --init_only \
      "$@" "${init[@]}" ${TRAIN_EXTRA[@]+"${TRAIN_EXTRA[@]}"} --deepspeed ""
  fi
  # shellcheck disable=SC2046  # the launcher is several words
  stage train $(nlg_launcher) train_nlg.py --config "$cfg" --output_dir "$RUN_OUT/train" --seed "$seed" "${extra[@]}"
  # shellcheck disable=SC2086
  nlg_eval_stages "$model" "$method" ${SUBSET_BENCHES[$subset]}
  # shellcheck disable=SC2086
  nlg_finish ${SUBSET_BENCHES[$subset]}
}

# --- NLU helpers (nlu_table.sh, ablation.sh, tsne.sh, mini.sh) ---------------------------------------

# flag_value FLAG ARGS...: the value after the last FLAG in ARGS (empty if absent).
flag_value() {
  local flag=$1 value="" previous=""; shift
  for arg in "$@"; do
    [ "$previous" = "$flag" ] && value=$arg
    previous=$arg
  done
  echo "$value"
}

# glue_train_run CONFIG SEED [EXTRA FLAGS...]: one finetune_glue.py run into $RUN_OUT/train, then the
# small files into the results folder. $GLUE_DIR set: local TSVs; unset: the nyu-mll/glue hub dataset.
glue_train_run() {
  local cfg=$1 seed=$2; shift 2
  local data=()
  [ -n "${GLUE_DIR:-}" ] && data=(--glue_dir "$GLUE_DIR")
  require_file "$cfg"
  stage train "$PY" finetune_glue.py --config "$cfg" "${data[@]}" --output_dir "$RUN_OUT/train" --seed "$seed" "$@" \
    ${GLUE_EXTRA[@]+"${GLUE_EXTRA[@]}"}
  # The final model's per-item dev predictions (finetune_glue.py's eval_dev/) go along as eval/dev.json
  # and eval/dev.samples.jsonl, for the paired comparisons of the probes.
  local dev=()
  [ -d "$RUN_OUT/train/eval_dev" ] && dev=("dev=$RUN_OUT/train/eval_dev")
  run_finish "$RUN_OUT/train" ${dev[@]+"${dev[@]}"}
}

# glue_grid STUDY [EXTRA FLAGS...]: every run of $MODELS x $TASKS x $METHODS x $SEEDS, each
# configs/glue/<task>_<model>_<method>.yaml into <study>/<task>_<model>_<method>/seed<k>.
glue_grid() {
  local study=$1 model task method seed; shift
  for model in $MODELS; do
    for task in $TASKS; do
      for method in $METHODS; do
        for seed in $SEEDS; do
          if run_begin "$study" "${task}_${model}_${method}" "$seed"; then
            glue_train_run "configs/glue/${task}_${model}_${method}.yaml" "$seed" "$@"
          fi
        done
      done
    done
  done
}

# Regulariser ablation: the λ flags that switch terms off (explicit flags win over the config's preset).
declare -A ABLATION_FLAGS=(
  [noreg]="--lambda_consistency 0 --lambda_diversity 0 --lambda_svd 0"
  [consistency]="--lambda_diversity 0 --lambda_svd 0"
  [diversity]="--lambda_consistency 0 --lambda_svd 0"
  [svd]="--lambda_consistency 0 --lambda_diversity 0"
  [all]=""
)
