#!/usr/bin/env bash
# A checkpoint sweep as independent jobs: one array task per checkpoint, each computing and keeping that
# checkpoint's results (--partial: no table written, so the tasks never clobber each other), then one gathering job
# that computes nothing again and writes the tables.
#
#   STEPS="0 1000 2000 4000 8000" RUN=/shared/runs/full bash examples/slurm_sweep.sh
#
# RUN must be on a file system every node sees. Adjust the resources to your cluster.
set -euo pipefail
: "${RUN:?set RUN to the run directory}"
: "${STEPS:?set STEPS to the checkpoint steps, e.g. STEPS=\"0 1000 2000\"}"
read -r -a steps <<< "$STEPS"
last=$(( ${#steps[@]} - 1 ))

array=$(sbatch --parsable --array="0-$last" --gpus=1 --time=02:00:00 --job-name=serpent-ckpt --wrap "
  steps=($STEPS); step=\${steps[\$SLURM_ARRAY_TASK_ID]}
  python -m serpent susceptibilities '$RUN' --steps \$step --partial --device cuda --quiet
  python -m serpent llc '$RUN' --steps \$step --partial --device cuda --quiet")

sbatch --dependency="afterok:$array" --time=01:00:00 --job-name=serpent-gather --wrap "
  python -m serpent susceptibilities '$RUN' --steps $STEPS --quiet
  python -m serpent llc '$RUN' --steps $STEPS --quiet
  python -m serpent serpent '$RUN' --quiet"
echo "submitted array job $array (${#steps[@]} checkpoints) and its gathering job"
