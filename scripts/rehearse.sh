#!/usr/bin/env bash
# The rehearsal of the paper path: every paper study with --rehearse, i.e. every stage for real at toy
# scale on CPU — PiSSA init, training (NLG: DeepSpeed ZeRO-2 on two CPU processes, the Gemma rows under
# ZeRO-3), generation, grading with every evaluator of the table, the paper-layout tables and the
# figures — with each paper model and hub dataset replaced by its tiny stand-in (balora/repro/rehearsal.py).
# The paper configs run unmodified: a config that would fail on the real data fails here.
#
#   bash scripts/rehearse.sh                 # all studies, their full grids, one seed (time: README)
#   bash scripts/rehearse.sh --quick         # each study's quick grid (one model per table, ranks 1 and 128,
#                                            # three GLUE tasks): balora/repro/studies.py, Study.quick
#   bash scripts/rehearse.sh --only 'nlg_table rank_sweep'
#
# Results and tables: outputs/rehearsal/results/ (figures in outputs/rehearsal/results/figures/);
# checkpoints: outputs/rehearsal/outputs/. A finished run is skipped, so a rerun resumes; delete
# outputs/rehearsal/ to start over. Exit status: non-zero as soon as one study fails.
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in *" -h "* | *" --help "*) ;; *) bash scripts/setup_env.sh ;; esac
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python
exec "$PY" -m balora.repro.run rehearsal "$@"
