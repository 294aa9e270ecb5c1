"""Tests of experiments/input_pipeline.py: the sampler and the iterators.

One test reads the real Fashion-MNIST (prepared once for the suite, see
conftest.py); everything else runs on ``tfds.testing.mock_data`` set up by
tests/mock_tfds.py, which is how the training tests use the pipeline.
"""

import itertools

import numpy as np
import pytest

from experiments import datasets
from experiments import input_pipeline
from tests.mock_tfds import mock_data


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


# ----------------------------------------------------------------------------
# Real data.


@pytest.mark.slow
def test_real_process_slices_read_only_their_records(fashion_mnist_data_dir):
  """Uncached reads (data source __getitems__) equal the cached fast path."""
  cached_config = dict(name="fashion_mnist", data_dir=fashion_mnist_data_dir,
                       prefetch=0)
  info = datasets.prepare(cached_config)
  uncached_config = dict(cached_config, cache=False)
  whole = _take(input_pipeline.train_iterator(
      cached_config, info, global_batch_size=64, seed=3, start_step=937), 2)
  for process_index in range(2):
    part = _take(input_pipeline.train_iterator(
        uncached_config, info, global_batch_size=64, seed=3, start_step=937,
        process_index=process_index, process_count=2), 2)
    for w, p in zip(whole, part):
      lo = 32 * process_index
      np.testing.assert_array_equal(p["image"], w["image"][lo:lo + 32])
      np.testing.assert_array_equal(p["label"], w["label"][lo:lo + 32])


# ----------------------------------------------------------------------------
# Bad input.


def test_bad_batch_sizes_and_options_raise():
  config = {"name": "mnist"}
  with mock_data(num_examples=40):
    info = datasets.prepare(config)
    with pytest.raises(ValueError, match="larger than the 40 training examples"):
      input_pipeline.train_iterator(config, info, global_batch_size=64, seed=0)
    with pytest.raises(ValueError, match="not divisible by the process count 3"):
      input_pipeline.train_iterator(config, info, global_batch_size=8, seed=0,
                                    process_count=3)
    with pytest.raises(ValueError, match="not divisible"):
      input_pipeline.eval_iterator(config, info, batch_size=7, process_count=2)
  with pytest.raises(ValueError, match="cache=True is not supported"):
    datasets.prepare({"name": "imagenet2012", "cache": True})
  with pytest.raises(ValueError, match="image_size"):
    datasets.prepare({"name": "mnist", "image_size": 32})
  assert input_pipeline.steps_per_epoch(info, 16) == 2


# ----------------------------------------------------------------------------
# The sampler, on mock data (as the training tests use it).

MOCK_CONFIGS = {
    "mnist": {"name": "mnist"},
    "cifar10": {"name": "cifar10"},  # augmented: crop + flip
    "imagenet2012": {"name": "imagenet2012", "image_size": 32},  # uncached
}


def _mock_info(config, num_examples):
  with mock_data(num_examples=num_examples):
    return datasets.prepare(config)


@pytest.mark.parametrize("name", sorted(MOCK_CONFIGS))
def test_mock_data_batches_have_model_shapes(name):
  config = MOCK_CONFIGS[name]
  with mock_data(num_examples=24):
    info = datasets.prepare(config)
    assert (info.num_train, info.num_test) == (24, 24)
    batch = next(input_pipeline.train_iterator(config, info, global_batch_size=8,
                                               seed=0))
    eval_batch = next(input_pipeline.eval_iterator(config, info, batch_size=8))
  shape = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3),
           "imagenet2012": (32, 32, 3)}[name]
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
  config = MOCK_CONFIGS[name]
  with mock_data(num_examples=40):
    info = datasets.prepare(config)

    def run(seed):
      return _take(input_pipeline.train_iterator(
          config, info, global_batch_size=8, seed=seed), 7)

    first, other = run(0), run(1)
    again = _take(input_pipeline.train_iterator(
        dict(config, prefetch=0), info, global_batch_size=8, seed=0), 7)
  _assert_batches_equal(again, first)
  assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_each_epoch_is_a_permutation():
  config = {"name": "mnist", "prefetch": 0}
  with mock_data(num_examples=40):
    info = datasets.prepare(config)
    batches = _take(input_pipeline.train_iterator(config, info, global_batch_size=8,
                                                  seed=0), 10)
    # The mock's test split holds the same 40 records as its train split.
    every = next(input_pipeline.eval_iterator(config, info, batch_size=40))
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
  config = dict(MOCK_CONFIGS[name], prefetch=0)
  with mock_data(num_examples=40):
    info = datasets.prepare(config)
    whole = _take(input_pipeline.train_iterator(config, info, global_batch_size=8,
                                                seed=5), 6)
    parts = [_take(input_pipeline.train_iterator(
        config, info, global_batch_size=8, seed=5, process_index=p,
        process_count=process_count), 6) for p in range(process_count)]
  for step, batch in enumerate(whole):
    assert parts[0][step]["image"].shape[0] == 8 // process_count
    _assert_batches_equal([_concat([part[step] for part in parts])], [batch])


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_resume_gives_the_uninterrupted_batches(name):
  config = MOCK_CONFIGS[name]
  with mock_data(num_examples=40):
    info = datasets.prepare(config)
    uninterrupted = _take(input_pipeline.train_iterator(
        config, info, global_batch_size=8, seed=2), 13)
    # Resume mid-epoch; the run crosses two epoch boundaries (5 steps each).
    resumed = _take(input_pipeline.train_iterator(
        config, info, global_batch_size=8, seed=2, start_step=4), 9)
    resumed_slice = _take(input_pipeline.train_iterator(
        config, info, global_batch_size=8, seed=2, start_step=4, process_index=1,
        process_count=2), 9)
  _assert_batches_equal(resumed, uninterrupted[4:])
  for got, want in zip(resumed_slice, uninterrupted[4:]):
    np.testing.assert_array_equal(got["image"], want["image"][4:])


def test_cifar_augmentation_is_crop_and_flip():
  with mock_data(num_examples=40):
    info = datasets.prepare({"name": "cifar10"})
    plain = next(input_pipeline.eval_iterator({"name": "cifar10"}, info,
                                              batch_size=40))["image"]
    augmented = {"name": "cifar10", "augment": True}
    not_augmented = {"name": "cifar10", "augment": False}
    aug = _take(input_pipeline.train_iterator(augmented, info, global_batch_size=8,
                                              seed=0), 5)
    off = _take(input_pipeline.train_iterator(not_augmented, info,
                                              global_batch_size=8, seed=0), 5)
  _assert_batches_equal([{"label": b["label"]} for b in aug],
                        [{"label": b["label"]} for b in off])  # same order
  assert not np.array_equal(aug[0]["image"], off[0]["image"])
  # Each augmented image is a shifted window (or its mirror) of its original.
  originals = {im.tobytes(): im for im in plain}
  for a, o in zip(aug[0]["image"], off[0]["image"]):
    assert o.tobytes() in originals
    found = False
    for flip in (False, True):
      src = o[:, ::-1] if flip else o
      for dy in range(-4, 5):
        for dx in range(-4, 5):
          ys, xs = slice(max(dy, 0), 32 + min(dy, 0)), slice(max(dx, 0), 32 + min(dx, 0))
          yd, xd = slice(max(-dy, 0), 32 + min(-dy, 0)), slice(max(-dx, 0), 32 + min(-dx, 0))
          if np.array_equal(a[yd, xd], src[ys, xs]):
            found = True
    assert found


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_every_example_once(process_count):
  config = {"name": "mnist", "prefetch": 2}
  with mock_data(num_examples=43):
    info = datasets.prepare(config)
    reference = next(input_pipeline.eval_iterator(config, info, batch_size=43))
    per_process = [list(input_pipeline.eval_iterator(
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
  config = {"name": "mnist"}
  with mock_data(num_examples=16):
    info = datasets.prepare(config)
    iterator = input_pipeline.train_iterator(config, info, global_batch_size=8,
                                             seed=0)
  assert next(iterator)["image"].shape == (8, 28, 28, 1)


def test_threaded_uncached_reads_do_not_change_batches():
  config = {"name": "imagenet2012", "image_size": 24, "prefetch": 0}
  with mock_data(num_examples=40):
    info = datasets.prepare(config)
    runs = [_take(input_pipeline.train_iterator(
        dict(config, read_threads=threads), info, global_batch_size=16, seed=1), 3)
            for threads in (1, 4)]
    evals = [list(input_pipeline.eval_iterator(
        dict(config, read_threads=threads), info, batch_size=16))
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
    info = datasets.prepare(config)
    batch = next(input_pipeline.train_iterator(config, info, global_batch_size=8,
                                               seed=0, process_index=1,
                                               process_count=2))
  assert batch["image"].shape == (4, 28, 28, 1)
