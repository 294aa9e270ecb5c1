r"""Input-pipeline benchmark: images/s of the ImageNet training transform, ours vs tf.data.

The transform (decode, random-resized crop, flip, normalise) runs on
synthetic ImageNet-shaped JPEGs, written by this script into a temporary
folder and deleted at the end, through two pipelines: ours
(``experiments.data.pipeline.train_batches``) and tf.data as the flax ImageNet
example builds it. Each measurement runs in a fresh process pinned to that
many cores, and the two alternate round after round; the JSON holds every
round, the medians and the ratio ours / tf.data per core count. What it
measures and why: docs/speed.md, "Input pipeline".

The full run (about 10 minutes on an idle 2-core machine):

  python -m experiments.benchmarks.input_pipeline \
      --out=experiments/results/benchmark_input_cpu.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.benchmarks import machine

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "experiments" / "results" / "benchmark_input_cpu.json"
# ImageNet's per-channel mean and standard deviation (0-255), as in flax's example.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def make_jpegs(folder: Path, count: int, seed: int = 0) -> list[str]:
  """``count`` ImageNet-shaped JPEGs: a smooth field, 30 shapes, blur and noise."""
  from PIL import Image, ImageDraw, ImageFilter  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(count):
    width, height = int(rng.integers(400, 501)), int(rng.integers(350, 376))
    field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(30):
      x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
      w, h = int(rng.integers(5, 150)), int(rng.integers(5, 150))
      shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
      shape((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.0)), np.float32)
    pixels += rng.normal(0, 24, pixels.shape)
    path = folder / f"{i:05d}.jpg"
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    paths.append(str(path))
  return paths


class JpegFiles:
  """A data source over JPEG files: each read opens the file (label: index % 1000)."""

  def __init__(self, paths: list[str]):
    self.paths = list(paths)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitems__(self, indices):
    return [{"image": Path(self.paths[i]).read_bytes(), "label": i % 1000}
            for i in indices]


# ----------------------------------------------------------------------------
# One measurement, in a process of its own (--child).


def _cpu_seconds() -> float:
  """CPU time of this process (all threads) and of its live worker processes."""
  total = time.process_time()
  for worker in multiprocessing.active_children():
    try:  # Linux: utime and stime, in clock ticks, are fields 14 and 15
      fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
      return float("nan")
  return total


def _timed(batches, warmup: int, steps: int, examples_per_batch: int) -> dict:
  """Images per second of wall time and per CPU-second of the pipeline."""
  for _ in range(warmup):
    next(batches)
  start, cpu_start = time.perf_counter(), _cpu_seconds()
  for _ in range(steps):
    next(batches)
  cpu = _cpu_seconds() - cpu_start
  images = steps * examples_per_batch
  return {"images_per_sec": images / (time.perf_counter() - start),
          "images_per_cpu_second": images / cpu}


def ours_images_per_sec(paths, *, cores, batch, image_size, warmup, steps) -> dict:
  from experiments.data import pipeline  # pylint: disable=g-import-not-at-top
  from experiments.data.datasets import DataConfig  # pylint: disable=g-import-not-at-top
  config = DataConfig.from_config({
      "name": "imagenet2012", "image_size": image_size, "worker_processes": cores,
      "read_threads": 1, "prefetch": 2})
  batches = pipeline.train_batches(pipeline.Records(JpegFiles(paths)), config,
                                   global_batch_size=batch, seed=0)
  try:
    return _timed(batches, warmup, steps, batch)
  finally:
    batches.close()


def tf_data_images_per_sec(paths, *, cores, batch, image_size, warmup, steps) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def train_example(path):
    jpeg = tf.io.read_file(path)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.io.extract_jpeg_shape(jpeg),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = tf.image.resize([image], [image_size, image_size], method="bicubic")[0]
    image = tf.image.random_flip_left_right(image)
    return (image - tf.constant(MEAN_RGB)) / tf.constant(STDDEV_RGB)

  options = tf.data.Options()
  options.threading.private_threadpool_size = cores
  options.threading.max_intra_op_parallelism = 1
  dataset = (tf.data.Dataset.from_tensor_slices(paths).repeat()
             .map(train_example, num_parallel_calls=cores)
             .batch(batch, drop_remainder=True).prefetch(1).with_options(options))
  batches = dataset.as_numpy_iterator()
  return _timed(batches, warmup, steps, batch)


def _child(args) -> None:
  if hasattr(os, "sched_setaffinity"):  # this process and its workers
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:int(args.cores)])
  paths = sorted(str(p) for p in Path(args.folder).glob("*.jpg"))
  measure = {"ours": ours_images_per_sec, "tf_data": tf_data_images_per_sec}[args.child]
  print(json.dumps(measure(paths, cores=int(args.cores), batch=args.batch,
                           image_size=args.image_size, warmup=args.warmup,
                           steps=args.steps)))


# ----------------------------------------------------------------------------
# The driver.


def _run(command) -> dict:
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          check=False)
  if result.returncode:
    raise RuntimeError(f"{' '.join(map(str, command))[:200]} failed:\n"
                       f"{result.stderr[-3000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def _summary(results: dict, gpu_images_per_sec: float | None) -> dict:
  summary = {}
  for cores, rounds in results["jpeg"].items():
    point = {}
    for key in ("images_per_sec", "images_per_cpu_second"):
      for which in ("ours", "tf_data"):
        point[f"{which}_{key}"] = statistics.median(r[which][key] for r in rounds)
      point[f"ours_over_tf_data_{key}"] = (point[f"ours_{key}"]
                                           / point[f"tf_data_{key}"])
    point["ours_images_per_sec_per_core"] = point["ours_images_per_sec"] / int(cores)
    point["tf_data_images_per_sec_per_core"] = (point["tf_data_images_per_sec"]
                                                / int(cores))
    if gpu_images_per_sec:
      point["cores_per_gpu"] = gpu_images_per_sec / point["ours_images_per_sec_per_core"]
    summary[f"{cores}_cores"] = point
  return summary


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--images", type=int, default=1024, help="synthetic JPEGs")
  parser.add_argument("--batch", type=int, default=128, help="images per batch")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--warmup", type=int, default=3, help="untimed batches")
  parser.add_argument("--steps", type=int, default=16, help="timed batches per round")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--cores", default="1,2",
                      help="comma-separated core counts (--child: one count)")
  parser.add_argument("--gpu_images_per_sec", type=float, default=None)
  parser.add_argument("--out", default=str(DEFAULT_OUT))
  parser.add_argument("--child", choices=("ours", "tf_data"), help=argparse.SUPPRESS)
  parser.add_argument("--folder", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = _parse(argv)
  if args.child:
    _child(args)
    return {}
  command = [sys.executable, "-m", "experiments.benchmarks.input_pipeline"]
  report = {"command": " ".join(["python -m experiments.benchmarks.input_pipeline",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "machine": machine.describe(
                "jax", "grain", "tensorflow-cpu", "tensorflow", "pillow", "numpy"),
            "settings": {k: v for k, v in vars(args).items()
                         if k not in ("child", "folder", "out")},
            "results": {"jpeg": {c: [] for c in args.cores.split(",")}}}
  with tempfile.TemporaryDirectory() as temporary:
    folder = Path(temporary) / "jpegs"
    folder.mkdir()
    paths = make_jpegs(folder, args.images)
    report["jpeg_kb_mean"] = float(np.mean([os.path.getsize(p) for p in paths]) / 1e3)
    for round_index in range(args.rounds):
      for cores in args.cores.split(","):
        row = {}
        for which in ("ours", "tf_data"):  # alternate, same files, same cores
          row[which] = _run(command + [
              f"--child={which}", f"--cores={cores}", f"--folder={folder}",
              f"--batch={args.batch}", f"--image_size={args.image_size}",
              f"--warmup={args.warmup}", f"--steps={args.steps}"])
        report["results"]["jpeg"][cores].append(row)
        print(f"round {round_index}, {cores} cores: images/s ours "
              f"{row['ours']['images_per_sec']:.0f}, tf.data "
              f"{row['tf_data']['images_per_sec']:.0f}; per CPU-second ours "
              f"{row['ours']['images_per_cpu_second']:.0f}, tf.data "
              f"{row['tf_data']['images_per_cpu_second']:.0f}", flush=True)
      report["summary"] = _summary(report["results"], args.gpu_images_per_sec)
      report["machine"]["load_average_at_end"] = os.getloadavg()
      Path(args.out).parent.mkdir(parents=True, exist_ok=True)
      Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
  print(json.dumps(report["summary"], indent=2))
  return report


if __name__ == "__main__":
  main()
