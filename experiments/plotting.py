"""Training curves from metrics.jsonl: loss, accuracy, learning rate, trust ratios."""
from __future__ import annotations

from collections import defaultdict

from experiments import metrics


def read_metrics(path: str) -> tuple[dict[str, list], dict[str, list]]:
  """{key: [(step, value)]} for the train and the eval records."""
  train, evaluation = defaultdict(list), defaultdict(list)
  for record in metrics.read_records(path):
    if record.get("kind") == "validation":  # runs with a holdout: not plotted
      continue
    target = evaluation if record.get("kind") == "eval" else train
    for key, value in record.items():
      if key not in ("step", "kind"):
        target[key].append((record["step"], value))
  return train, evaluation


def plot_training_curves(metrics_path: str, out_path: str, *, title: str = "") -> None:
  """Writes a 2x2 PNG: loss, accuracy, learning rate, per-layer trust ratios."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  train, evaluation = read_metrics(metrics_path)
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))

  def line(ax, series, label, **kwargs):
    if series:
      steps, values = zip(*series)
      ax.plot(steps, values, label=label, **kwargs)

  ax = axes[0, 0]
  line(ax, train["loss"], "train")
  line(ax, evaluation["loss"], "test", marker="o")
  ax.set(title="cross-entropy loss", xlabel="step", yscale="log")
  ax.legend()
  ax = axes[0, 1]
  line(ax, train["accuracy"], "train")
  line(ax, evaluation["accuracy"], "test", marker="o")
  ax.set(title="accuracy", xlabel="step")
  ax.legend()
  ax = axes[1, 0]
  line(ax, train["learning_rate"], "global LR")
  ax.set(title="learning rate", xlabel="step")
  ax = axes[1, 1]
  ratios = sorted(k for k in train if k.startswith("trust_ratio/"))
  for key in ratios:
    line(ax, train[key], key[len("trust_ratio/"):], linewidth=1)
  if ratios:
    ax.set(title="LARS trust ratio per layer", xlabel="step", yscale="log")
    ax.legend(fontsize=6, ncol=2)
  else:
    line(ax, train["grad_norm"], "gradient norm")
    line(ax, train["param_norm"], "parameter norm")
    ax.set(title="global norms", xlabel="step", yscale="log")
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out_path, dpi=100)
  plt.close(fig)
