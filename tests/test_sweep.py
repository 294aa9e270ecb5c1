"""The sweep driver's grid and its test of the paper's claim."""

from experiments import sweep
from experiments.configs import sweep as sweep_config


def test_grid_adds_the_edge_learning_rates_only_at_the_largest_batches():
  names = list(sweep_config.LEARNING_RATES)
  runs = list(sweep.planned_runs([], names, sweep_config.BATCH_SIZES))
  assert ("sgd", 8192, 0.003, 0) in runs and ("lars/paper", 16384, 162.0, 0) in runs
  assert ("sgd", 128, 0.003, 0) not in runs
  for b in sweep_config.BATCH_SIZES:
    for name in names:  # the same number of trials for every optimizer
      n = sum(1 for run in runs if run[:2] == (name, b))
      assert n == 5 if b in sweep_config.EDGE_BATCH_SIZES else n == 4


def test_claim_check():
  def table(lars_large, sgd_large):
    t = {}
    for b in (128, 512, 8192, 16384):
      small = b <= 512
      t[("lars/paper", b)] = (0.91 if small else lars_large, 1.0, 1)
      t[("sgd", b)] = (0.915 if small else sgd_large, 0.1, 1)
    return t

  holds = sweep.claim_check(table(0.91, 0.85), [128, 512, 8192, 16384])
  assert holds.endswith("holds here.")
  assert "0.50 points below at 8192" in holds
  fails = sweep.claim_check(table(0.89, 0.85), [128, 512, 8192, 16384])
  assert fails.endswith("does not hold here.")
  # SGD keeping up means the claim (LARS is needed) does not hold either.
  assert sweep.claim_check(table(0.91, 0.91), [128, 512, 8192]).endswith(
      "does not hold here.")
