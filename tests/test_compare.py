"""tools/compare.py: the method list, the summary table and the figure, without training."""

import importlib.util
import json
import os
import sys

import pytest

from tests import helpers


@pytest.fixture(scope="module")
def compare():
  spec = importlib.util.spec_from_file_location(
      "compare", os.path.join(helpers.ROOT, "tools", "compare.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules["compare"] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


def test_methods_cover_the_baselines_and_share_runs(compare):
  assert {"CE (instance sampling)", "class-balanced sampling", "cRT", "LWS", "tau-norm", "NCM",
          "logit adjustment (loss)", "logit adjustment (post-hoc)", "balanced softmax", "focal",
          "class-balanced loss", "LDAM-DRW", "CBD", "CBD_ENS"} <= set(compare.METHODS)
  options = {"decoupled_epochs": 10, "tau": {0: 1.5}}
  crt = compare.RUNS["crt"].flags("/s", 0, options)
  assert "--backbone_from=/s/ce" in crt and "--epochs=10" in crt
  assert "--tau=1.5" in compare.RUNS["tau_norm"].flags("/s", 0, options)
  assert "--teachers=/s/ce,/s/ce_2" in compare.RUNS["cbd_ens"].flags("/s", 0, options)
  assert compare.RUNS["cbd_ens"].needs == ("ce", "ce_2")
  assert "--seed=1000" in compare.RUNS["ce_2"].flags("/s", 0, options)


def test_table_json_and_figure(compare, tmp_path):
  result = {"top1": 0.5, "many": 0.9, "medium": 0.5, "few": 0.1, "ece": 0.2}
  rows = {"CE (instance sampling)": [result, {**result, "top1": 0.7}],
          "CBD": [{**result, "few": None}, result]}
  options = {"dataset": "mnist_lt", "epochs_note": "2 epochs", "tau": {0: 1.0}, "sweeps": {}}
  table = compare.write_outputs(str(tmp_path), rows, [0, 1], options)
  lines = table.splitlines()
  assert lines[0].startswith("| method (%, mean ± std over seeds 0,1) | top-1 |")
  assert lines[2] == "| CE (instance sampling) | 60.0 ± 14.1 | 90.0 ± 0.0 | 50.0 ± 0.0 | " \
                     "10.0 ± 0.0 | 20.0 ± 0.0 |"
  assert "| CBD | 50.0 ± 0.0 |" in lines[3] and "10.0 ± 0.0" in lines[3]  # one few value
  with open(tmp_path / "compare.json") as f:
    saved = json.load(f)
  assert saved["summary"]["CE (instance sampling)"]["top1"]["values"] == pytest.approx([50, 70])
  assert os.path.getsize(tmp_path / "compare.png") > 10_000
  assert (tmp_path / "compare.md").read_text().count("|---|") == 1
