#!/usr/bin/env bash
# Susceptibilities and the LLC of one run on several machines at once: one torchrun per node, the ranks sharing the
# work (checkpoints across ranks, or one checkpoint's heads/chains when there are fewer checkpoints than ranks).
# Rank 0 writes the tables; run the same script again after a failure and every kept checkpoint is reused.
#
#   sbatch --export=RUN=/shared/runs/full examples/slurm_torchrun.sh
#
# RUN must be on a file system every node sees. Adjust the resources to your cluster.
#SBATCH --job-name=serpent-sweep
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=04:00:00
set -euo pipefail
: "${RUN:?set RUN to the run directory, e.g. sbatch --export=RUN=/shared/runs/full ...}"
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

for stage in susceptibilities llc; do
  srun torchrun --nnodes="$SLURM_NNODES" --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$HEAD:29500" \
    -m serpent "$stage" "$RUN" --device cuda --quiet
done
python -m serpent serpent "$RUN" --quiet      # the UMAP serpent and the explorer page, on one node
