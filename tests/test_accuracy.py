"""The shipped digits configs reach the accuracy they promise (real data, full runs), and the README's sample
output is what the quick demo prints."""

import readme_sample
from conftest import ROOT, read_json, train


def test_the_full_digits_config_reaches_its_test_accuracy(tmp_path):
    train(tmp_path / "run", ROOT / "configs" / "cnn_full.gin", check=0, timeout=600)
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["test"]["test_acc"] >= 0.98, summary["test"]


def test_the_readme_sample_is_what_the_quick_demo_prints(tmp_path):
    # The quick demo (configs/cnn.gin) as the README shows it: its output, and the accuracy it promises.
    output = readme_sample.run_demo(tmp_path / "first_run")
    missing = readme_sample.differences(output)
    assert not missing, (
        f"README's sample differs from the output (run `python tests/readme_sample.py`): {missing}"
    )
    assert read_json(tmp_path / "first_run" / "summary.json")["test"]["test_acc"] >= 0.95
