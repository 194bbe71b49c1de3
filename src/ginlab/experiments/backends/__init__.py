"""Where the prepared runs of an experiment run: this machine (local) or a SLURM cluster (slurm)."""
