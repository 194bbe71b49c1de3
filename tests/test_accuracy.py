"""The shipped digits configs reach the accuracy they promise (real data, full runs)."""

import pytest
from conftest import ROOT, read_json, train


@pytest.mark.parametrize("config, at_least", [("cnn.gin", 0.95), ("cnn_full.gin", 0.98)])
def test_digits_configs_reach_their_test_accuracy(tmp_path, config, at_least):
    train(tmp_path / "run", ROOT / "configs" / config, check=0, timeout=600)
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["test"]["test_acc"] >= at_least, summary["test"]
