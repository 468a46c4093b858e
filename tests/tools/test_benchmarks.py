"""The benchmarks run in their tiny modes, so they cannot rot."""

import pytest

from tests import helpers

# Each benchmark starts TensorFlow in its own process and measures for seconds.
pytestmark = pytest.mark.slow


def table_rows(stdout):
  return [line for line in stdout.splitlines()
          if line.startswith("| ") and not line.startswith("| method") and
          not line.startswith("| step")]


def test_bench_sampling_tiny_prints_a_row_per_method():
  result = helpers.run_tool("bench_sampling.py", "--tiny", "--seconds", "0.2")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = table_rows(result.stdout)
  assert [row.split("|")[1].strip() for row in rows] == [
      "index", "per_class", "rejection", "resample", "resample_stream"]
  index_row = rows[0].split("|")
  assert float(index_row[6]) == 1.0  # reads per example
  assert float(rows[2].split("|")[6]) > 5  # rejection reads many records per example


def test_bench_train_step_tiny_prints_ratios():
  result = helpers.run_tool("bench_train_step.py", "--tiny", "--teachers", "1")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = table_rows(result.stdout)
  names = [row.split("|")[1].strip() for row in rows]
  assert names == ["stage one", "teacher forward", "student alone, K=1",
                   "teacher_features, K=1", "stage two, K=1", "cached, K=1"]
  assert float(rows[-2].split("|")[5].split()[0].strip("*")) > 0
  assert float(rows[-1].split("|")[5].split()[0].strip("*")) > 0
  assert "worst live ratio" in result.stdout and "worst cached / stage one" in result.stdout


def test_bench_prepare_tiny_prints_the_one_time_work():
  result = helpers.run_tool("bench_prepare.py", "--tiny")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = {row.split("|")[1].strip(): row.split("|")[2:6] for row in table_rows(result.stdout)}
  assert list(rows) == ["image check, first run (JPEG 250-500 px)",
                        "image check, first run (8x8 PNG)", "image check, cache hit (8x8 PNG)",
                        "one os.stat per file, for comparison",
                        "export to cache (TFRecord of JPEGs)"]
  seconds = {name: float(cells[1]) for name, cells in rows.items()}
  assert all(float(cells[2]) > 0 for cells in rows.values())  # images/s
  # The hit reads a record instead of decoding 2,000 files.
  assert seconds["image check, cache hit (8x8 PNG)"] < seconds["image check, first run (8x8 PNG)"]


def test_bench_input_tiny_prints_a_ratio_per_pipeline():
  result = helpers.run_module("tools.bench_input", "--tiny")  # as documented: python -m
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line for line in result.stdout.splitlines()
          if line.startswith("| ") and not line.startswith("| pipeline")]
  assert [row.split("|")[1].strip() for row in rows] == [
      "train", "noise floor", "eval", "train + jitter", "train + RandAugment", "train end to end",
      "eval end to end"]
  for row in rows:
    reference, ours, ratio = (cell.strip() for cell in row.split("|")[4:7])
    assert float(reference) > 0 and float(ours) > 0 and float(ratio.rstrip("x")) > 0


def test_bench_serving_limits_tiny_refuses_the_bomb_under_the_limit_only():
  result = helpers.run_tool("bench_serving_limits.py", "--tiny")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [row.split("|") for row in table_rows(result.stdout) if not row.startswith("| export")]
  assert [(row[1].strip(), row[3].strip().split(":")[0]) for row in rows] == [
      ("default limit", "served"), ("default limit", "refused"),
      ("limit above the bomb", "served"), ("default limit", "served"),
      ("default limit", "served")]
  assert "image of 400 x 400 pixels" in rows[1][3] and int(rows[1][5]) > 0
  assert "animated GIF, 50 frames of 300 x 300" in rows[3][2]


def test_measure_tuning_tiny_prints_tunings_and_students(tmp_path):
  result = helpers.run_tool("measure_tuning.py", "--tiny", "--distill", f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [row.split("|") for row in table_rows(result.stdout)
          if not row.startswith(("| tuning", "| run"))]
  assert [(row[1].strip(), row[2].strip()) for row in rows[:2]] == [("full", "ce"),
                                                                     ("adaptformer", "ce")]
  trained = [row[5].strip() for row in rows[:2]]
  assert trained[0] != trained[1]  # the adapter trains far fewer weights
  assert [row[1].strip() for row in rows[2:]] == [
      "student of adaptformer_ce", "student of a ResNet-8 from scratch",
      "ResNet-8 teacher from scratch"]


def test_measure_teacher_views_tiny_prints_live_and_cached_rows(tmp_path):
  result = helpers.run_tool("measure_teacher_views.py", "--tiny", f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [row.split("|") for row in table_rows(result.stdout)
          if not row.startswith(("| teacher features", "| M "))]
  assert [row[1].strip() for row in rows] == ["live teachers", "cached, M = 2", "2"]
  assert 0 <= float(rows[1][2].split("±")[0]) <= 100
  assert float(rows[2][2].replace(",", "")) > 0  # caching images/s
  assert rows[2][4].strip() == "256 bytes"  # two 64-wide teachers in float16


def test_bench_teacher_features_tiny_reads_rows():
  result = helpers.run_tool("bench_teacher_features.py", "--tiny")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = {row.split("|")[1].strip(): row.split("|")[3] for row in table_rows(result.stdout)}
  assert list(rows) == ["cache", "read", "memory"]
  assert "1,024 bytes per image per view" in rows["cache"]
  assert float(rows["read"].split()[0].replace(",", "")) > 0


def test_profile_input_tiny_prints_a_row_per_part_taken_out():
  result = helpers.run_module("tools.profile_input", "--tiny")  # as documented: python -m
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line for line in result.stdout.splitlines()
          if line.startswith("| ") and not line.startswith("| cbd_tf training map")]
  assert [row.split("|")[1].strip() for row in rows] == [
      "as training runs it", "one map", "- drop counting", "- ignore_errors", "- pixel limit",
      "- format branch"]
  assert all(float(row.split("|")[3]) > 0 for row in rows)  # cbd_tf images per CPU-second
