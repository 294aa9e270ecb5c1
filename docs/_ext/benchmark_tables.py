"""Tables of the committed benchmark JSON, built when the docs are built.

The numbers are written once, in experiments/results/*.json; the Speed page
shows them with one directive per table::

    ```{benchmark-table} ../experiments/results/benchmark_lars_cpu.json
    :kind: step
    ```

Kinds: ``step`` (benchmarks/benchmark_lars.py: step time, compile time and
kernels per optimizer and tree; ``ratios`` and ``targets``: its ratios, and
the targets it checks), ``train`` (benchmarks/benchmark_train.py:
examples/s with LARS and SGD-momentum per model, loop and batch) and ``input``
(benchmarks/input_pipeline.py: images/s of the input pipeline against
tf.data). A GPU run's JSON renders with the same kinds.
"""
import json
import pathlib

# benchmark_lars.py's optimizer keys, in the order and words of the table.
STEP_ROWS = (
    ("lars_optax", "`lars_optax.lars`"),
    ("optax_lars", "`optax.lars`"),
    ("lars_minimal", "minimal LARS (10 lines of plain jnp, the floor)"),
    ("lars_optax_lamb", "`lars_optax.lamb`"),
    ("optax_lamb", "`optax.lamb`"),
    ("sgd_momentum", "`optax.sgd(momentum=0.9)`"),
    ("plain", "`p - lr * g`"),
)
TREE_NAMES = {"resnet50": "ResNet-50", "transformer": "transformer"}


def _number(value, digits):
  return "" if value is None else f"{value:,.{digits}f}"


def _rate(value):
  """Examples or images per second: whole numbers, 3 digits below 100."""
  return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def step_table(report):
  """(header, rows) of benchmark_lars.py's JSON: one row per optimizer."""
  trees = list(report["trees"])
  header = ["optimizer"]
  for tree in trees:
    name = TREE_NAMES.get(tree, tree)
    header += [f"{name} step (ms)", "compile (s)", "ops"]
  rows = []
  for key, label in STEP_ROWS:
    if not any(key in report["trees"][t]["median_step_ms"] for t in trees):
      continue
    row = [label]
    for tree in trees:
      data = report["trees"][tree]
      row += [_number(data["median_step_ms"].get(key), 1),
              _number(data["compile_s"].get(key), 2),
              _number(data["kernels_per_step"].get(key), 0)]
    rows.append(row)
  return header, rows


# benchmark_lars.py's ratios, in the words of the table.
RATIO_ROWS = (
    ("ours_over_lars_minimal", "step, ours / minimal LARS"),
    ("compile_ours_over_lars_minimal", "compile, ours / minimal LARS"),
    ("optax_lars_over_ours", "step, optax.lars / ours"),
    ("compile_ours_over_optax_lars", "compile, ours / optax.lars"),
    ("ours_over_sgd_momentum", "step, ours / SGD-momentum"),
    ("lars_minimal_over_sgd_momentum", "step, minimal LARS / SGD-momentum"),
    ("optax_lamb_over_our_lamb", "step, optax.lamb / lars_optax.lamb"),
    ("compile_our_lamb_over_optax_lamb", "compile, lars_optax.lamb / optax.lamb"),
    ("our_lamb_over_sgd_momentum", "step, lars_optax.lamb / SGD-momentum"),
)
TARGET_WORDS = (("_over_", " / "), ("minimal", "minimal LARS"), ("optax_lars", "optax.lars"),
                ("_at_most_", " <= "), ("_at_least_", " >= "), ("_", " "))


def ratios_table(report):
  """(header, rows) of benchmark_lars.py's ratios: one row per ratio."""
  trees = list(report["trees"])
  header = ["ratio"] + [TREE_NAMES.get(t, t) for t in trees]
  rows = []
  for key, label in RATIO_ROWS:
    values = [report["trees"][t]["ratios"].get(key) for t in trees]
    if any(v is not None for v in values):
      rows.append([label] + [_number(v, 2) for v in values])
  return header, rows


def target_name(key):
  """'resnet50_step_ours_over_minimal_at_most_1.10' in words."""
  tree, _, rest = key.partition("_")
  for old, new in TARGET_WORDS:
    rest = rest.replace(old, new)
  return f"{TREE_NAMES.get(tree, tree)}: {rest}"


def targets_table(report):
  """(header, rows) of benchmark_lars.py's targets and whether they were met."""
  rows = [[target_name(key), "met" if met else "NOT met"]
          for key, met in report.get("targets", {}).items()]
  return ["target", ""], rows


def train_table(report):
  """(header, rows) of benchmark_train.py's JSON: one row per model and loop."""
  points = [p for p in report["points"] if "examples_per_sec_lars" in p]
  batches = sorted({p["global_batch_size"] for p in points})
  header = ["model", "loop"]
  for batch in batches:
    header += [f"batch {batch}: LARS / SGD examples/s", "LARS/SGD step"]
  rows = []
  for model, loop in dict.fromkeys((p["model"], p["loop"]) for p in points):
    row = [model, loop]
    for batch in batches:
      match = [p for p in points if (p["model"], p["loop"], p["global_batch_size"])
               == (model, loop, batch)]
      if match:
        p = match[0]
        row += [f"{_rate(p['examples_per_sec_lars'])} / {_rate(p['examples_per_sec_sgd'])}",
                f"{p['lars_over_sgd']:.2f}"]
      else:
        row += ["", ""]
    rows.append(row)
  return header, rows


def input_table(report):
  """(header, rows) of input_pipeline.py's JSON: images/s per number of cores."""
  summary = report["summary"]
  header = ["cores", "ours (images/s)", "tf.data (images/s)", "ours / tf.data"]
  rows = []
  for key in sorted(k for k in summary if k.endswith("_cores")):
    s = summary[key]
    rows.append([key.split("_")[0], _rate(s["ours_images_per_sec"]),
                 _rate(s["tf_data_images_per_sec"]),
                 f"{s['ours_over_tf_data_images_per_sec']:.2f}"])
  return header, rows


KINDS = {"step": step_table, "ratios": ratios_table, "targets": targets_table,
         "train": train_table, "input": input_table}


def table_node(header, rows):
  """A docutils table; cell text in backticks becomes inline code."""
  from docutils import nodes  # pylint: disable=import-outside-toplevel

  def cell(text):
    paragraph = nodes.paragraph()
    if len(text) > 1 and text.startswith("`") and text.endswith("`"):
      paragraph += nodes.literal(text=text[1:-1])
    else:
      paragraph += nodes.Text(text)
    return nodes.entry("", paragraph)

  table = nodes.table()
  group = nodes.tgroup(cols=len(header))
  table += group
  group += [nodes.colspec(colwidth=1) for _ in header]
  head = nodes.thead()
  head += nodes.row("", *[cell(h) for h in header])
  body = nodes.tbody()
  body += [nodes.row("", *[cell(c) for c in row]) for row in rows]
  group += [head, body]
  return table


def setup(app):
  # Sphinx only here, so that the tests can read the tables without it.
  from docutils.parsers.rst import directives  # pylint: disable=import-outside-toplevel
  from sphinx.util.docutils import SphinxDirective  # pylint: disable=import-outside-toplevel

  class BenchmarkTable(SphinxDirective):
    """The table of one benchmark JSON (path relative to the page)."""

    required_arguments = 1
    option_spec = {"kind": lambda value: directives.choice(value, tuple(KINDS))}

    def run(self):
      relative, path = self.env.relfn2path(self.arguments[0])
      self.env.note_dependency(relative)
      report = json.loads(pathlib.Path(path).read_text())
      header, rows = KINDS[self.options.get("kind", "step")](report)
      return [table_node(header, rows)]

  app.add_directive("benchmark-table", BenchmarkTable)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
