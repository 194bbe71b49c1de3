"""The README's sample terminal output, generated from a real run and kept true by a test.

    python tests/readme_sample.py            # runs the quick demo and rewrites the sample in README.md

The sample is the output of `bin/train.py results/first_run configs/cnn.gin` with 2 torch threads (the machine
it documents has 2 cores; torch's sums, and so the numbers, depend on the thread count). Its first lines, the
first step and epoch lines, and the test line are shown; timings, which differ on every run, are compared as
their shape only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMAND = ["bin/train.py", "results/first_run", "configs/cnn.gin"]
THREADS = "2"
BEGIN, END = "<!-- sample: bin/train.py results/first_run configs/cnn.gin -->\n```\n", "```\n<!-- /sample -->"
# Timings: the parts of a line that differ between runs.
TIMINGS = re.compile(r"\d+ ex/s|elapsed \d+:\d\d:\d\d|left \d+:\d\d:\d\d|data [\d.]+ ms|update [\d.]+ ms")


def masked(line: str) -> str:
    return TIMINGS.sub(lambda m: re.sub(r"[\d.:]+", "#", m.group(0)), line)


def pick(output: str) -> list[str]:
    """The lines the README shows: everything before the first step, the first step and epoch lines, the test."""
    lines, shown = output.splitlines(), []
    for line in lines:
        shown.append(line)
        if line.startswith("epoch 1/"):
            break
    shown.append("...")
    shown += [line for line in lines if line.startswith("test (")]
    return shown


def sample_in_readme() -> list[str]:
    text = README.read_text()
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].splitlines()


def run_demo(save_dir: Path) -> str:
    """The quick demo's output into `save_dir` (the README shows it as results/first_run)."""
    env = {**os.environ, "OMP_NUM_THREADS": THREADS, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, COMMAND[0], str(save_dir), *COMMAND[2:]], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return out.replace(f"run folder: {save_dir}", f"run folder: {COMMAND[1]}")


def differences(output: str) -> list[str]:
    """README sample lines that the output does not print (timings compared by shape)."""
    printed = [masked(line) for line in pick(output)]
    return [line for line in sample_in_readme() if line != "..." and masked(line) not in printed]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        lines = pick(run_demo(Path(folder) / "first_run"))
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n".join(lines) + "\n" + text[end:])
    print("\n".join(lines))
