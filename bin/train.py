#!/usr/bin/env python3
"""Train one run into SAVE_DIR from gin config files and bindings.

    bin/train.py results/first_run configs/cnn.gin
    bin/train.py results/lr3 configs/cnn.gin -b "torch.optim.Adam.lr=3e-3#training_loop.n_epochs=20"
    bin/train.py results/lr3 -b training_loop.reload=True          # continue it, in place

Exit codes: 0 finished, 1 failed during training, 2 usage or configuration error (nothing written),
3 interrupted by SIGTERM/SIGUSR1/Ctrl-C after a checkpoint (continue with -b training_loop.reload=True).
"""

import argparse
import os
import sys

# Arguments are checked before anything heavy is imported: --help and usage errors answer at once.
parser = argparse.ArgumentParser(
    prog="bin/train.py",
    description=__doc__.split("\n\n")[0],
    epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    formatter_class=argparse.RawDescriptionHelpFormatter,
)
parser.add_argument(
    "save_dir", metavar="SAVE_DIR", help="the run folder (created; must not hold a run unless reloading)"
)
parser.add_argument(
    "configs", metavar="CONFIG", nargs="*", help=".gin files, parsed in order (optional on reload)"
)
parser.add_argument(
    "-b",
    "--bindings",
    action="append",
    default=[],
    metavar="BINDINGS",
    help='gin bindings separated by "#" or newlines; may repeat; later ones win',
)
args = parser.parse_args()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from ginlab.training.main import main  # noqa: E402

sys.exit(main(args.save_dir, args.configs, args.bindings, sys.argv))
