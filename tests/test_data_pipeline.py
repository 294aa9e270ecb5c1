"""Tests of experiments/data/pipeline.py: the sampler, the iterators, grain's workers.

The real-data tests read Fashion-MNIST (prepared once for the suite, see
conftest.py); most others run on ``tfds.testing.mock_data`` set up by
tests/mock_tfds.py, which is how the training tests use the pipeline. The
worker-process tests build their datasets from the module's public pieces
(``Records``, ``train_batches``, ``load``) over JPEGs made here.
"""

import hashlib
import io
import itertools
import os

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.data import pipeline
from experiments.data import preparation
from experiments.data.datasets import DataConfig
from tests.mock_tfds import mock_data


def _config(**fields) -> DataConfig:
  return DataConfig.from_config(fields)


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _assert_batches_equal(got, want):
  assert len(got) == len(want)
  for a, b in zip(got, want):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _concat(batches):
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _digest(batches) -> str:
  """sha256 (16 hex digits) of the batches' arrays, key by key in sorted order."""
  digest = hashlib.sha256()
  for batch in batches:
    for key in sorted(batch):
      digest.update(key.encode())
      digest.update(np.ascontiguousarray(batch[key]).tobytes())
  return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------
# The batches are those of the pipeline before grain (bit for bit).
#
# The digests were computed from the hand-built pipeline that grain replaced
# (experiments/input_pipeline.py at commit 7d18686), with the same calls in its
# API: from a checkout of that commit,
#   git archive 7d18686 experiments tests | tar -x -C /tmp/old_code
#   cd /tmp/old_code && DATA_DIR=<fashion_mnist data_dir> python digests.py
# They only say that the batches did not change. What makes them right is the
# independent check beside them: the same batches transcribed in NumPy from
# the module docstring's rules and the raw tfds records (`_transcribed_*`).

# Mean and standard deviation of the pixels / 255 (the datasets' usual values).
PIXEL_STATS = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}


def _raw_split(name, data_dir, split):
  """(uint8 images, labels) of a tfds split in record order, read with tfds
  alone."""
  records = tfds.builder(name, data_dir=data_dir).as_data_source(split=split)
  records = [records[i] for i in range(len(records))]
  return (np.stack([np.asarray(r["image"]) for r in records]),
          np.asarray([r["label"] for r in records]))


def _normalised(name, images):
  mean, std = PIXEL_STATS[name]
  return (images / 255.0 - mean) / std


def _transcribed_train(name, images, labels, *, seed, batch_size, steps):
  """The train batches of ``steps``: epoch e's order is a permutation drawn
  from (seed, e) (seed words, stream 0), the batch of step s its part k, with
  e, k = divmod(s, steps per epoch); no augmentation for MNIST-like data."""
  per_epoch = len(labels) // batch_size
  batches = []
  for step in steps:
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, 0, 0, epoch]).permutation(len(labels))
    rows = order[k * batch_size:(k + 1) * batch_size]
    batches.append({"image": _normalised(name, images[rows]),
                    "label": labels[rows]})
  return batches


def _transcribed_eval(name, images, labels, *, batch_size):
  """Every example once, in order, the last batch padded (zeros, mask 0)."""
  padded = -(-len(labels) // batch_size) * batch_size - len(labels)
  image = np.concatenate([_normalised(name, images),
                          np.zeros((padded, *images.shape[1:]))])
  label = np.concatenate([labels, np.zeros(padded, labels.dtype)])
  mask = np.concatenate([np.ones(len(labels)), np.zeros(padded)])
  return [{"image": image[i:i + batch_size], "label": label[i:i + batch_size],
           "mask": mask[i:i + batch_size]}
          for i in range(0, len(label), batch_size)]


def _assert_batches_match(got, want):
  """Labels and masks exactly; images to float32 rounding."""
  assert len(got) == len(want)
  for a, b in zip(got, want):
    assert sorted(a) == sorted(b)
    np.testing.assert_array_equal(a["label"], b["label"])
    if "mask" in b:
      np.testing.assert_array_equal(a["mask"], b["mask"])
    np.testing.assert_allclose(a["image"], b["image"], rtol=1e-6, atol=1e-6)
# where digests.py makes the iterators below with datasets.prepare(dict) and
# input_pipeline.train_iterator / eval_iterator, and prints _digest of each.

BEFORE_GRAIN = {
    ("mnist", "train"): "a839b5f50a64d9ae",
    ("mnist", "eval"): "756dc2ac56643fb3",
    ("fashion_mnist", "train seed 0, steps 0-2"): "08849e335e6003c3",
    ("fashion_mnist", "train seed 1, steps 12-14"): "04e49790c6538b46",
    ("fashion_mnist", "validation"): "baa61b1604cc2034",
    ("fashion_mnist", "eval"): "2d53e7c73a57bdef",
    ("fashion_mnist", "train subset"): "fd6a35b7e07a3884",
}


def test_mock_batches_are_those_before_grain():
  name = "mnist"
  config = _config(name=name)
  with mock_data(num_examples=40):
    info = preparation.prepare(config)
    train = _take(pipeline.train_iterator(config, info, global_batch_size=8,
                                          seed=5), 12)
    evaluation = list(pipeline.eval_iterator(config, info, batch_size=16))
    raw_train = _raw_split(name, config.data_dir, "train")
    raw_test = _raw_split(name, config.data_dir, "test")
  assert _digest(train) == BEFORE_GRAIN[(name, "train")]
  assert _digest(evaluation) == BEFORE_GRAIN[(name, "eval")]
  _assert_batches_match(train, _transcribed_train(
      name, *raw_train, seed=5, batch_size=8, steps=range(12)))
  _assert_batches_match(evaluation, _transcribed_eval(name, *raw_test,
                                                      batch_size=16))


@pytest.mark.slow  # decodes Fashion-MNIST's 70k records: 10-30 s
def test_study_batches_are_those_before_grain(fashion_mnist_data_dir):
  """The study's data (batch 4096, 5,000 held out) across an epoch boundary."""
  config = _config(name="fashion_mnist", data_dir=fashion_mnist_data_dir,
                   validation_holdout=5000, validation_seed=0)
  info = preparation.prepare(config)

  def train(seed, start_step):
    return _take(pipeline.train_iterator(config, info, global_batch_size=4096,
                                         seed=seed, start_step=start_step), 3)

  def evaluate(subset, batch_size=4096):
    return list(pipeline.eval_iterator(config, info, batch_size=batch_size,
                                       subset=subset))

  batches = {
      "train seed 0, steps 0-2": train(0, 0),
      "train seed 1, steps 12-14": train(1, 12),  # 13 steps per epoch
      "validation": evaluate("validation"),
      "eval": evaluate("eval"),
      "train subset": evaluate("train", 8192),
  }
  got = {key: _digest(value) for key, value in batches.items()}
  assert got == {key: digest for (name, key), digest in BEFORE_GRAIN.items()
                 if name == "fashion_mnist"}

  # The same batches from the raw records and the documented rules: 5,000
  # examples held out by a permutation drawn from the validation seed (stream
  # 2), the first 5,000 of it; the rest, in order, is what trains.
  name = "fashion_mnist"
  images, labels = _raw_split(name, fashion_mnist_data_dir, "train")
  order = np.random.default_rng([0, 0, 2]).permutation(len(labels))
  held_out, kept = np.sort(order[:5000]), np.sort(order[5000:])
  want = {
      "train seed 0, steps 0-2": _transcribed_train(
          name, images[kept], labels[kept], seed=0, batch_size=4096,
          steps=range(3)),
      "train seed 1, steps 12-14": _transcribed_train(
          name, images[kept], labels[kept], seed=1, batch_size=4096,
          steps=range(12, 15)),
      "validation": _transcribed_eval(name, images[held_out], labels[held_out],
                                      batch_size=4096),
      "eval": _transcribed_eval(
          name, *_raw_split(name, fashion_mnist_data_dir, "test"),
          batch_size=4096),
      "train subset": _transcribed_eval(name, images[kept], labels[kept],
                                        batch_size=8192),
  }
  for key in want:
    _assert_batches_match(batches[key], want[key])


def test_batches_follow_the_documented_sampler():
  """A NumPy transcription of the module docstring's rule, on mock mnist."""
  seed, batch_size, num_examples = 7, 8, 44  # 5 steps per epoch, 4 left over
  config = _config(name="mnist")
  with mock_data(num_examples=num_examples):
    info = preparation.prepare(config)
    every = next(pipeline.eval_iterator(config, info, batch_size=num_examples,
                                        subset="train"))
    batches = _take(pipeline.train_iterator(config, info,
                                            global_batch_size=batch_size,
                                            seed=seed), 12)
  for step, batch in enumerate(batches):
    epoch, k = divmod(step, num_examples // batch_size)
    rng = np.random.default_rng([seed, 0, 0, epoch])  # seed words, stream 0
    indices = rng.permutation(num_examples)[k * batch_size:(k + 1) * batch_size]
    np.testing.assert_array_equal(batch["image"], every["image"][indices])
    np.testing.assert_array_equal(batch["label"], every["label"][indices])


def test_augmentation_rows_skip_to_their_place_in_the_stream():
  full = np.random.default_rng([3, 0, 1, 17]).random((64, 41))
  for rows in (range(0, 8), range(13, 40), range(63, 64)):
    np.testing.assert_array_equal(pipeline._step_uniforms(3, 17, rows, 41),
                                  full[rows.start:rows.stop])


# ----------------------------------------------------------------------------
# Real data.


def test_real_process_slices_read_only_their_records(fashion_mnist_data_dir):
  """Uncached reads (data source __getitems__) equal the cached fast path."""
  fields = dict(name="fashion_mnist", data_dir=fashion_mnist_data_dir, prefetch=0)
  cached_config = _config(**fields)
  info = preparation.prepare(cached_config)
  uncached_config = _config(**fields, cache=False)
  whole = _take(pipeline.train_iterator(
      cached_config, info, global_batch_size=64, seed=3, start_step=937), 2)
  for process_index in range(2):
    part = _take(pipeline.train_iterator(
        uncached_config, info, global_batch_size=64, seed=3, start_step=937,
        process_index=process_index, process_count=2), 2)
    for w, p in zip(whole, part):
      lo = 32 * process_index
      np.testing.assert_array_equal(p["image"], w["image"][lo:lo + 32])
      np.testing.assert_array_equal(p["label"], w["label"][lo:lo + 32])


# ----------------------------------------------------------------------------
# Bad input.


def test_bad_batch_sizes_and_options_raise():
  config = _config(name="mnist")
  with mock_data(num_examples=40):
    info = preparation.prepare(config)
    with pytest.raises(ValueError, match="larger than the 40 training examples"):
      pipeline.train_iterator(config, info, global_batch_size=64, seed=0)
    with pytest.raises(ValueError, match="not divisible by the process count 3"):
      pipeline.train_iterator(config, info, global_batch_size=8, seed=0,
                              process_count=3)
    with pytest.raises(ValueError, match="not divisible"):
      pipeline.eval_iterator(config, info, batch_size=7, process_count=2)
  with pytest.raises(ValueError, match="cache=True is not supported"):
    _config(name="imagenet2012", cache=True)
  with pytest.raises(ValueError, match="image_size"):
    _config(name="mnist", image_size=32)
  assert pipeline.steps_per_epoch(info, 16) == 2


# ----------------------------------------------------------------------------
# The sampler, on mock data (as the training tests use it).

MOCK_CONFIGS = {
    "mnist": {"name": "mnist"},
    # Uncached JPEGs, read in this process (the mock lives only here).
    "imagenet2012": {"name": "imagenet2012", "image_size": 32,
                     "worker_processes": 0},
}


@pytest.mark.parametrize("name", sorted(MOCK_CONFIGS))
def test_mock_data_batches_have_model_shapes(name):
  config = _config(**MOCK_CONFIGS[name])
  with mock_data(num_examples=24):
    info = preparation.prepare(config)
    assert (info.num_train, info.num_test) == (24, 24)
    batch = next(pipeline.train_iterator(config, info, global_batch_size=8,
                                         seed=0))
    eval_batch = next(pipeline.eval_iterator(config, info, batch_size=8))
  shape = {"mnist": (28, 28, 1), "imagenet2012": (32, 32, 3)}[name]
  assert info.image_shape == shape
  assert info.num_classes == (1000 if name == "imagenet2012" else 10)
  for b in (batch, eval_batch):
    assert b["image"].shape == (8, *shape) and b["image"].dtype == np.float32
    assert b["label"].shape == (8,) and b["label"].dtype == np.int32
    assert np.all((0 <= b["label"]) & (b["label"] < info.num_classes))
    assert np.all(np.isfinite(b["image"]))
  assert eval_batch["mask"].dtype == np.float32


@pytest.mark.parametrize("name", sorted(MOCK_CONFIGS))
def test_order_is_a_function_of_seed_and_step(name):
  fields = MOCK_CONFIGS[name]
  with mock_data(num_examples=40):
    config = _config(**fields)
    info = preparation.prepare(config)

    def run(seed):
      return _take(pipeline.train_iterator(
          config, info, global_batch_size=8, seed=seed), 7)

    first, other = run(0), run(1)
    again = _take(pipeline.train_iterator(
        _config(**fields, prefetch=0), info, global_batch_size=8, seed=0), 7)
  _assert_batches_equal(again, first)
  assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_each_epoch_is_a_permutation():
  config = _config(name="mnist", prefetch=0)
  with mock_data(num_examples=40):
    info = preparation.prepare(config)
    batches = _take(pipeline.train_iterator(config, info, global_batch_size=8,
                                            seed=0), 10)
    # The mock's test split holds the same 40 records as its train split.
    every = next(pipeline.eval_iterator(config, info, batch_size=40))
  all_images = {im.tobytes() for im in every["image"]}
  assert len(all_images) == 40  # mock examples are distinct
  for epoch in range(2):
    seen = [im.tobytes() for b in batches[5 * epoch:5 * epoch + 5] for im in b["image"]]
    assert sorted(seen) == sorted(all_images)
  first_epoch = [im.tobytes() for b in batches[:5] for im in b["image"]]
  second_epoch = [im.tobytes() for b in batches[5:] for im in b["image"]]
  assert first_epoch != second_epoch  # reshuffled


@pytest.mark.parametrize("name", sorted(MOCK_CONFIGS))
@pytest.mark.parametrize("process_count", [2, 4])
def test_process_slices_concatenate_to_the_global_batch(name, process_count):
  config = _config(**MOCK_CONFIGS[name], prefetch=0)
  with mock_data(num_examples=40):
    info = preparation.prepare(config)
    whole = _take(pipeline.train_iterator(config, info, global_batch_size=8,
                                          seed=5), 6)
    parts = [_take(pipeline.train_iterator(
        config, info, global_batch_size=8, seed=5, process_index=p,
        process_count=process_count), 6) for p in range(process_count)]
  for step, batch in enumerate(whole):
    assert parts[0][step]["image"].shape[0] == 8 // process_count
    _assert_batches_equal([_concat([part[step] for part in parts])], [batch])


@pytest.mark.parametrize("name", sorted(MOCK_CONFIGS))
def test_resume_gives_the_uninterrupted_batches(name):
  config = _config(**MOCK_CONFIGS[name])
  with mock_data(num_examples=40):
    info = preparation.prepare(config)
    uninterrupted = _take(pipeline.train_iterator(
        config, info, global_batch_size=8, seed=2), 13)
    # Resume mid-epoch; the run crosses two epoch boundaries (5 steps each).
    resumed = _take(pipeline.train_iterator(
        config, info, global_batch_size=8, seed=2, start_step=4), 9)
    resumed_slice = _take(pipeline.train_iterator(
        config, info, global_batch_size=8, seed=2, start_step=4, process_index=1,
        process_count=2), 9)
  _assert_batches_equal(resumed, uninterrupted[4:])
  for got, want in zip(resumed_slice, uninterrupted[4:]):
    np.testing.assert_array_equal(got["image"], want["image"][4:])


def test_jpeg_batches_in_pieces_match_across_processes_and_resume():
  """Uncached JPEG batches are loaded in pieces of 64 rows: 160 rows -> 3."""
  config = _config(name="imagenet2012", image_size=16, worker_processes=0,
                   prefetch=2)
  with mock_data(num_examples=400):
    info = preparation.prepare(config)
    whole = _take(pipeline.train_iterator(config, info, global_batch_size=320,
                                          seed=4), 3)
    parts = [_take(pipeline.train_iterator(
        config, info, global_batch_size=320, seed=4, start_step=1,
        process_index=p, process_count=2), 2) for p in range(2)]
  for step in (1, 2):
    _assert_batches_equal([_concat([part[step - 1] for part in parts])],
                          [whole[step]])


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_every_example_once(process_count):
  config = _config(name="mnist", prefetch=2)
  with mock_data(num_examples=43):
    info = preparation.prepare(config)
    reference = next(pipeline.eval_iterator(config, info, batch_size=43))
    per_process = [list(pipeline.eval_iterator(
        config, info, batch_size=10, process_index=p, process_count=process_count))
                   for p in range(process_count)]
  assert reference["mask"].sum() == 43
  assert all(len(batches) == 5 for batches in per_process)  # ceil(43 / 10)
  merged = _concat([_concat([per_process[p][b] for p in range(process_count)])
                    for b in range(5)])
  np.testing.assert_array_equal(merged["mask"], [1.0] * 43 + [0.0] * 7)
  np.testing.assert_array_equal(merged["image"][:43], reference["image"])
  np.testing.assert_array_equal(merged["label"][:43], reference["label"])
  assert not merged["image"][43:].any() and not merged["label"][43:].any()


def test_cached_mock_data_outlives_the_mock_context():
  config = _config(name="mnist")
  with mock_data(num_examples=16):
    info = preparation.prepare(config)
    iterator = pipeline.train_iterator(config, info, global_batch_size=8, seed=0)
  assert next(iterator)["image"].shape == (8, 28, 28, 1)


def test_threaded_uncached_reads_do_not_change_batches():
  fields = {"name": "imagenet2012", "image_size": 24, "worker_processes": 0}
  with mock_data(num_examples=40):
    info = preparation.prepare(_config(**fields))
    runs = [_take(pipeline.train_iterator(
        _config(**fields, read_threads=threads), info, global_batch_size=16,
        seed=1), 3) for threads in (1, 4)]
    evals = [list(pipeline.eval_iterator(
        _config(**fields, read_threads=threads), info, batch_size=16))
             for threads in (1, 4)]
  _assert_batches_equal(runs[1], runs[0])
  _assert_batches_equal(evals[1], evals[0])


def test_config_dict_with_placeholders():
  ml_collections = pytest.importorskip("ml_collections")
  config = ml_collections.ConfigDict({
      "name": "mnist",
      "data_dir": ml_collections.config_dict.placeholder(str),
      "manual_dir": ml_collections.config_dict.placeholder(str),
      "cache": True,
      "augment": True,
  })
  with mock_data(num_examples=16):
    data_config = DataConfig.from_config(config)
    info = preparation.prepare(data_config)
    batch = next(pipeline.train_iterator(data_config, info, global_batch_size=8,
                                         seed=0, process_index=1,
                                         process_count=2))
  assert batch["image"].shape == (4, 28, 28, 1)


# ----------------------------------------------------------------------------
# Worker processes (grain's mp_prefetch), on JPEGs made here.


class JpegSource:
  """``num`` random JPEGs of 40-90 x 40-90 pixels, labels 0-9: a data source."""

  def __init__(self, num: int):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    self.records = []
    for i in range(num):
      shape = (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3)
      buffer = io.BytesIO()
      Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
          buffer, "JPEG", quality=90)
      self.records.append({"image": buffer.getvalue(), "label": i % 10})

  def __len__(self):
    return len(self.records)

  def __getitems__(self, indices):
    return [self.records[i] for i in indices]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_worker_processes_give_the_batches_of_one_process():
  records = pipeline.Records(JpegSource(96))
  runs = []
  for workers in (0, 2):
    config = _config(name="imagenet2012", image_size=16, worker_processes=workers)
    batches = pipeline.train_batches(records, config, global_batch_size=32,
                                     seed=9, start_step=2)
    runs.append(_take(batches, 4))  # crosses the epoch boundary (3 steps each)
    batches.close()
  _assert_batches_equal(runs[1], runs[0])


class ExitInWorker:
  """Element 3 ends the worker process that makes it, as a crash would."""

  def __init__(self):
    self.parent = os.getpid()

  def __call__(self, element):
    if element == 3 and os.getpid() != self.parent:
      os._exit(1)
    return {"image": np.full((2, 4), element, np.float32)}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_that_dies_is_a_clear_error():
  config = _config(name="imagenet2012", worker_processes=2)
  batches = pipeline.load(grain.MapDataset.range(100).map(ExitInWorker()), config)
  with pytest.raises(RuntimeError, match="terminated unexpectedly with exit code 1"):
    for _ in batches:
      pass
