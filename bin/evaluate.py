#!/usr/bin/env python3
"""Evaluate a checkpoint of a run, rebuilding model and data from the run folder's saved config.

    bin/evaluate.py results/first_run                       # best checkpoint on the test split
    bin/evaluate.py results/first_run --checkpoint last --split val
    bin/evaluate.py results/first_run -b "digits.num_workers=0"

Writes SAVE_DIR/evaluations/<checkpoint>-<split>.json and .predictions.csv. Exit codes: 0 done,
1 failed, 2 usage error (not a run folder, unknown checkpoint or split).
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser(
    prog="bin/evaluate.py",
    description=__doc__.split("\n\n")[0],
    epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    formatter_class=argparse.RawDescriptionHelpFormatter,
)
parser.add_argument("save_dir", metavar="SAVE_DIR", help="a run folder written by bin/train.py")
parser.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint path (default: best)")
parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="default: test")
parser.add_argument(
    "-b",
    "--bindings",
    action="append",
    default=[],
    metavar="BINDINGS",
    help="gin bindings applied over the saved config (data location, workers ...)",
)
args = parser.parse_args()

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from ginlab.errors import GinlabError  # noqa: E402
from ginlab.training.evaluate import evaluate, report_line  # noqa: E402

try:
    result = evaluate(args.save_dir, args.checkpoint, args.split, args.bindings)
except GinlabError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
print(report_line(args.save_dir, result))
print(
    f"written: {args.save_dir}/evaluations/{result['checkpoint']}-{result['split']}.json and .predictions.csv"
)
