"""The input-pipeline benchmark (experiments/benchmarks/input_pipeline.py) at tiny size."""

import json

import numpy as np
import pytest
from PIL import Image

from experiments.benchmarks import input_pipeline


def test_synthetic_jpegs_are_shaped_like_imagenet(tmp_path):
  paths = input_pipeline.make_jpegs(tmp_path, 3)
  for path in paths:
    with Image.open(path) as image:
      assert image.format == "JPEG" and image.mode == "RGB"
      assert 400 <= image.width <= 500 and 350 <= image.height <= 375
  source = input_pipeline.JpegFiles(paths)
  assert len(source) == 3
  assert [r["label"] for r in source.__getitems__([2, 0])] == [2, 0]


@pytest.mark.slow  # starts worker processes and TensorFlow: about 30-60 s
@pytest.mark.timeout(600)
def test_benchmark_runs_and_writes_its_json(tmp_path):
  out = tmp_path / "benchmark.json"
  report = input_pipeline.main([
      "--images=8", "--batch=4", "--image_size=32", "--warmup=1", "--steps=1",
      "--rounds=1", "--cores=1", f"--out={out}"])
  assert json.loads(out.read_text()) == json.loads(json.dumps(report))
  assert report["command"].startswith("python -m experiments.benchmarks.input_pipeline")
  assert {"cpu_count", "grain", "jax", "platform"} <= set(report["machine"])
  point = report["summary"]["1_cores"]
  for key in ("ours_images_per_sec", "tf_data_images_per_sec",
              "ours_over_tf_data_images_per_sec",
              "ours_over_tf_data_images_per_cpu_second"):
    assert np.isfinite(point[key]) and point[key] > 0, key
