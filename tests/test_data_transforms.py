"""Tests of experiments/data/transforms.py: the ImageNet crop decoded at reduced scale."""

import io

import numpy as np
from PIL import Image

from experiments.data import transforms
from experiments.data.datasets import DataConfig


def _jpeg(width, height):
  """A smooth test picture (reduced-scale decoding is exact only on smooth ones)."""
  y, x = np.mgrid[0:height, 0:width]
  image = np.stack([x * 255 // width, y * 255 // height,
                    (x + y) * 255 // (width + height)], -1).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "JPEG", quality=90)
  return buffer.getvalue()


def _full_decode(jpeg, box, size):
  with Image.open(io.BytesIO(jpeg)) as image:
    return np.asarray(image.convert("RGB").resize(
        (size, size), Image.Resampling.BILINEAR, box=box))


def test_small_crops_of_large_jpegs_decode_at_reduced_scale():
  jpeg, size = _jpeg(1000, 800), 64
  box = (100, 200, 400, 500)  # 300 px: 1/4 scale keeps 75 >= 64
  reduced = transforms._decode_crop_resize(jpeg, lambda h, w: box, size)
  full = _full_decode(jpeg, box, size)
  assert reduced.shape == full.shape == (size, size, 3)
  assert np.abs(reduced.astype(int) - full).mean() < 2.0  # same picture
  assert not np.array_equal(reduced, full)  # but not a full decode


def test_crops_without_room_to_reduce_are_decoded_in_full():
  jpeg, size = _jpeg(470, 375), 224
  box = (30, 20, 400, 360)  # 340 px < 2 x 224
  np.testing.assert_array_equal(
      transforms._decode_crop_resize(jpeg, lambda h, w: box, size),
      _full_decode(jpeg, box, size))


def test_imagenet_training_transform_is_normalised_crops_and_flips():
  config = DataConfig.from_config({"name": "imagenet2012", "image_size": 32})
  jpegs = [_jpeg(120, 90), _jpeg(90, 120)]
  uniforms = np.random.default_rng(0).random((2, transforms.num_uniforms(config)))
  uniforms[:, -1] = [0.2, 0.8]  # flip the first, not the second
  images = transforms.transform(config, jpegs, uniforms)
  assert images.shape == (2, 32, 32, 3) and images.dtype == np.float32
  unflipped = uniforms.copy()
  unflipped[:, -1] = 0.9
  plain = transforms.transform(config, jpegs, unflipped)
  np.testing.assert_array_equal(images[0], plain[0][:, ::-1])
  np.testing.assert_array_equal(images[1], plain[1])
  evaluation = transforms.transform(config, jpegs, None)
  assert evaluation.shape == (2, 32, 32, 3) and np.all(np.isfinite(evaluation))
