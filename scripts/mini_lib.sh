# The CPU mini-reproduction's shared settings (sourced by mini.sh and mini_probes.sh after lib.sh and
# lib_parse_args): offline embedded models, the GSM8K subset and its evaluation, the data folder's
# files, and the per-run CPU time estimates printed by --dry-run.
# Estimates come from step times measured on an idle 2-core machine with 2 threads (SmolLM2 4×256: LoRA
# ~6.2 s, BA-LoRA 8.4 s per step; GSM8K generation 2.8 s per problem; MiniLM 32×128 LoRA step 2.2 s,
# scaled by each task's mean padded batch length) and the factors below.

GSM8K_LIMIT=${GSM8K_LIMIT:-64}
GSM8K_MAX_NEW_TOKENS=${GSM8K_MAX_NEW_TOKENS:-256}
GLUE_DIR=${GLUE_DIR:-$BALORA_DATA_DIR/glue}   # the GLUE TSVs of the data folder
NLG_STEPS=40; NLG_STEP_S=6.2; NLG_LOAD_S=35
GSM8K_GENERATION_S=$((GSM8K_LIMIT * 28 / 10 + 15)); GSM8K_NLL_S=$((GSM8K_LIMIT / 2 + 20))
NLU_STEP_S_128=2.2; NLU_RUN_OVERHEAD_S=15

# 2 threads on a dedicated 2-core machine. On a shared, oversubscribed one use OMP_NUM_THREADS=1: at a load
# average of 8, a MiniLM STS-B step took 18 s with 2 threads and 3.4 s with 1 (thread spin-waiting).
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export GPUS=cpu NLG_CONFIG_DIR=configs/mini
# What the SmolLM2 runs evaluate: "gsm8k_nll" alone skips the ~4 min of greedy generation per run (the
# rank-sweep and ablation tables read the NLL only).
SUBSET_BENCHES[gsm8k]=${MINI_NLG_BENCHES:-"gsm8k gsm8k_nll"}
EVAL_ARGS[gsm8k]="--data $BALORA_DATA_DIR/gsm8k/test.jsonl --limit $GSM8K_LIMIT --max_new_tokens $GSM8K_MAX_NEW_TOKENS --batch_size 16"
EVAL_ARGS[gsm8k_nll]="--data $BALORA_DATA_DIR/gsm8k/test.jsonl --limit $GSM8K_LIMIT"
# Training rows from the data folder too (the configs name data/gsm8k/train.jsonl, the default folder's).
GSM8K_TRAIN=(--data_path "$BALORA_DATA_DIR/gsm8k/train.jsonl")

# Relative cost of one training step against LoRA (reference forward for BA-LoRA; full backward + AdamW).
method_factor() {
  case "$1" in ba-lora|consistency|diversity|svd|lora-reg) echo 1.35 ;; full) echo 2.0 ;; dora) echo 1.3 ;; adalora) echo 1.1 ;; *) echo 1.0 ;; esac
}

nlg_estimate() {  # METHOD -> seconds for training + the GSM8K evaluations of SUBSET_BENCHES[gsm8k]
  local eval_s=0
  [[ " ${SUBSET_BENCHES[gsm8k]} " == *" gsm8k "* ]] && eval_s=$((eval_s + GSM8K_GENERATION_S))
  [[ " ${SUBSET_BENCHES[gsm8k]} " == *" gsm8k_nll "* ]] && eval_s=$((eval_s + GSM8K_NLL_S))
  awk -v s="$NLG_STEPS" -v t="$NLG_STEP_S" -v f="$(method_factor "$1")" -v l="$NLG_LOAD_S" -v e="$eval_s" \
    'BEGIN { printf "%d", s * t * f + l + e }'
}

# Mean padded batch length of 32 MiniLM-tokenised rows (measured on 2,000 train rows per task).
declare -A NLU_BATCH_LEN=([sst2]=39 [cola]=23 [mrpc]=81 [rte]=128 [stsb]=34)
declare -A NLU_TRAIN_ROWS=([sst2]=67349 [cola]=8551 [mrpc]=3668 [rte]=2490 [stsb]=5749)

# CONFIG TASK METHOD [ROWS] -> seconds (steps from the config × scaled step time × factor); ROWS: the
# training rows when a probe changes them (the imbalance probe's subsample).
nlu_estimate() {
  local cfg=$1 task=$2 method=$3 rows_override=${4:-} epochs bs cap
  if [ ! -f "$cfg" ]; then echo 0; return; fi
  epochs=$(awk -F': *' '$1=="num_train_epochs"{print $2}' "$cfg"); epochs=${epochs:-1}
  bs=$(awk -F': *' '$1=="per_device_train_batch_size"{print $2}' "$cfg"); bs=${bs:-32}
  cap=$(awk -F': *' '$1=="max_train_samples"{print $2}' "$cfg"); cap=${cap:-${NLU_TRAIN_ROWS[$task]}}
  [ -n "$rows_override" ] && cap=$rows_override
  awk -v n="${NLU_TRAIN_ROWS[$task]}" -v c="$cap" -v bs="$bs" -v ep="$epochs" -v t="$NLU_STEP_S_128" \
      -v L="${NLU_BATCH_LEN[$task]}" -v f="$(method_factor "$method")" -v o="$NLU_RUN_OVERHEAD_S" \
    'BEGIN { rows = (c < n ? c : n); steps = int((rows + bs - 1) / bs) * ep; st = t * L / 128; if (st < 0.1) st = 0.1;
             printf "%d", steps * st * bs / 32 * f + o }'
}
