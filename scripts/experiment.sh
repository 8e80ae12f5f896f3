#!/usr/bin/env bash
# The experiment of issue 22 (docs/train_eval.md, "The experiment"): does co-learning beat a
# two-branch net with the same skips? conf/experiment: 34 phantom studies (32 thorax), 5-fold
# cross-validation by patient, protocol.seeds [2019, 2020], the demo's width and settings, every
# thorax slice scored; all six nets with co-learning in the paper's variant, then co-learning alone
# again in the authors'-code variant (the other nets' final checkpoints are reused, not retrained).
#
# Resumable: rerun the same command. The phantom reuses a complete cohort, preprocess skips
# unchanged studies, and every training resumes from its last checkpoint (one per epoch); a
# finished training is loaded, not repeated. It writes into this checkout's data/ (replacing the
# demo's outputs): run it in its own checkout (git worktree add ../experiment) to keep them.
#
# Usage: scripts/experiment.sh            (KEDRO=path/to/kedro to use another environment)
# Tables: data/08_reporting/experiment/{paper,authors_code}/ (table_ii, table_ablation, answers, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
KEDRO=${KEDRO:-.venv/bin/kedro}
export KEDRO_DISABLE_TELEMETRY=true MPLBACKEND=Agg
OUT=data/08_reporting/experiment

run() { "$KEDRO" run --env experiment "$@"; }

keep() {  # copy this run's tables and answers (the top-level reporting files) to $OUT/$1
    mkdir -p "$OUT/$1"
    find data/08_reporting -maxdepth 1 -type f \( -name '*.md' -o -name '*.csv' -o -name '*.json' \) \
        -exec cp {} "$OUT/$1/" \;
    cp data/06_models/split.json "$OUT/$1/"
}

run --pipeline phantom
run --pipeline preprocess
run --pipeline train_eval
keep paper
run --pipeline train_eval --params "net_overrides.colearn.model.variant=authors_code"
keep authors_code
echo "experiment tables: $OUT/paper and $OUT/authors_code"
