"""search_cnn: an adaptive search (TPE + ASHA) for the small CNN on scikit-learn's digits, 15 trials.

    python experiments/search_cnn/main.py prepare     # check the space with gin;
    $RESULTS_DIR/search_cnn/search/
    python experiments/search_cnn/main.py run         # locally, one trial per core (or: run --backend slurm)
    python experiments/search_cnn/main.py status      # done / running / pruned / failed / left, best, ETA
    python experiments/search_cnn/main.py report      # $RESULTS_DIR/search_cnn/report/search.md

Kill `run` at any moment (Ctrl-C, SIGKILL, an expired allocation) and start it again: it continues.
See README.md beside this file.
"""

from ginlab.experiments import Experiment, main
from ginlab.experiments.search import ASHA, TPE, LogUniform, Search, Uniform

experiment = Experiment(
    name="search_cnn",
    configs=["configs/cnn.gin"],  # the same CNN, data and 8 epochs as experiments/tune_lr
    search=Search(
        space={
            "torch.optim.Adam.lr": LogUniform(1e-4, 1e-2),  # tune_lr's grid spans 1e-4 .. 1e-2
            "cnn.dropout": Uniform(0.0, 0.5),
        },
        sampler=TPE(startup_trials=5),
        pruner=ASHA(min_epochs=1, reduction_factor=4),  # decisions after epochs 1, 4 and 8
        trials=15,  # tune_lr's budget: 15 runs
        # val_loss, not val_acc: after one epoch this CNN predicts one class on the validation set
        # (val_acc 0.089 at every learning rate, measured), a tie ASHA cannot rank; val_loss tells them apart.
        metric="val_loss",
        mode="min",
        seed=0,
    ),
    slurm={"time": "00:20:00", "cpus": 2, "mem": "2G", "signal_seconds": 120},
)

if __name__ == "__main__":
    main(experiment)
