#!/usr/bin/env bash
# The rehearsal of the paper path: every paper script with --rehearse, i.e. every stage for real at toy
# scale on CPU — PiSSA init, training (NLG: DeepSpeed ZeRO-2 on two CPU processes, the Gemma rows under
# ZeRO-3), generation, grading with every evaluator of the table, the paper-layout tables and the
# figures — with each paper model and hub dataset replaced by its tiny stand-in (balora/repro/rehearsal.py).
# The paper configs run unmodified: a config that would fail on the real data fails here.
#
#   bash scripts/rehearse.sh                 # all scripts, their full grids, one seed (time: README)
#   bash scripts/rehearse.sh --quick         # one model per table, ranks 1 and 128, three GLUE tasks
#   bash scripts/rehearse.sh --only 'nlg_table rank_sweep'
#
# Results and tables: outputs/rehearsal/results/ (figures in outputs/rehearsal/results/figures/);
# checkpoints: outputs/rehearsal/outputs/. A finished run is skipped, so a rerun resumes; delete
# outputs/rehearsal/ to start over. Exit status: non-zero as soon as one script fails.
set -euo pipefail
cd "$(dirname "$0")/.."

SCRIPTS="nlg_table ba-lora loss_curves rank_sweep ablation nlu_table glue tsne
  ablation_llms lora_reg lambda_sensitivity glue_large_models nlu_diversity noisy_probe imbalanced_mnli tsne_steps
  model_range"
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) SCRIPTS="$2"; shift ;;
    -h|--help)
      echo "usage: $(basename "$0") [--quick] [--only 'SCRIPT ...']"
      echo
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

bash scripts/setup_env.sh
if [ "$QUICK" = 1 ]; then
  # One stand-in model per table and the extreme ranks; every stage still runs.
  export MODELS=llama2-7b RANKS="1 128" NLG_MODEL=llama2-7b TASKS="rte stsb mnli" GLUE_TASKS="rte stsb"
  export SUBSETS=${SUBSETS:-"metamath python conversation"}
fi

start=$SECONDS
for script in $SCRIPTS; do
  if [ ! -f "scripts/$script.sh" ]; then
    echo "error: scripts/$script.sh does not exist" >&2; exit 2
  fi
  echo "=== $script.sh --rehearse ($(date '+%H:%M:%S'))"
  t0=$SECONDS
  if [[ " tsne glue nlu_table noisy_probe glue_large_models tsne_steps " == *" $script "* ]]; then
    # The NLU scripts read MODELS/TASKS of their own; the NLG grid's MODELS must not leak into them.
    env -u MODELS bash "scripts/$script.sh" --rehearse
  else
    bash "scripts/$script.sh" --rehearse
  fi
  echo "=== $script.sh: ok ($((SECONDS - t0)) s)"
done
echo "=== rehearsal passed: $(echo $SCRIPTS) ($((SECONDS - start)) s); results in outputs/rehearsal/results"
