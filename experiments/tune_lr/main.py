"""tune_lr: the learning rate of Adam for the small CNN on scikit-learn's digits, 5 rates x 3 seeds.

    python experiments/tune_lr/main.py prepare     # 15 configs + jobs.txt in $RESULTS_DIR/tune_lr/
    python experiments/tune_lr/main.py run         # locally, one run per core (or: run --backend slurm)
    python experiments/tune_lr/main.py status
    python experiments/tune_lr/main.py report      # $RESULTS_DIR/tune_lr/report/summary.md

See README.md beside this file.
"""

from ginlab.experiments import Experiment, ReportSpec, main

experiment = Experiment(
    name="tune_lr",
    configs=["configs/cnn.gin"],
    grid={
        "torch.optim.Adam.lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
        "training_loop.seed": [0, 1, 2],
    },
    report=ReportSpec(
        metric="val_acc",
        mode="max",
        x="torch.optim.Adam.lr",
        log_x=True,
        over="training_loop.seed",
        labels={"torch.optim.Adam.lr": "learning rate"},
    ),
    slurm={"time": "00:20:00", "cpus": 2, "mem": "2G", "signal_seconds": 120},
)

if __name__ == "__main__":
    main(experiment)
