"""Tests of experiments/data/transforms.py: the ImageNet crop decoded at reduced scale."""

import io

import cv2
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


def _bilinear(image, size):
  """NumPy bilinear resize, half-pixel centres, no anti-aliasing (as tf.image.resize)."""
  def weights(n_in):
    src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (src - low)
  y0, y1, wy = weights(image.shape[0])
  x0, x1, wx = weights(image.shape[1])
  image = image.astype(np.float64)
  rows = image[y0] * (1 - wy)[:, None, None] + image[y1] * wy[:, None, None]
  return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def _full_decode(jpeg, box, size):
  """Full decode, crop, NumPy bilinear resize to size x size (float)."""
  with Image.open(io.BytesIO(jpeg)) as image:
    pixels = np.asarray(image.convert("RGB"))
  left, top, right, bottom = box
  return _bilinear(pixels[top:bottom, left:right], size)


def test_small_crops_of_large_jpegs_decode_at_reduced_scale():
  jpeg, size = _jpeg(1000, 800), 64
  box = (100, 200, 400, 500)  # 300 px: 1/4 scale keeps 75 >= 64
  reduced = transforms._decode_crop_resize(jpeg, lambda h, w: box, size)
  full = _full_decode(jpeg, box, size)
  assert reduced.shape == full.shape == (size, size, 3)
  assert np.abs(reduced - full).mean() < 2.0  # same picture
  with Image.open(io.BytesIO(jpeg)) as image:  # but not a full decode
    pixels = np.asarray(image.convert("RGB"))[200:500, 100:400]
  assert not np.array_equal(reduced, cv2.resize(pixels, (size, size),
                                                interpolation=cv2.INTER_LINEAR))


def test_crops_without_room_to_reduce_are_the_bilinear_resize_of_a_full_decode():
  jpeg, size = _jpeg(470, 375), 224
  box = (30, 20, 400, 360)  # 340 px < 2 x 224
  got = transforms._decode_crop_resize(jpeg, lambda h, w: box, size)
  assert got.dtype == np.uint8
  # OpenCV's fixed-point weights round to within one level of the exact resize.
  assert np.abs(got - _full_decode(jpeg, box, size)).max() <= 1.0


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


def test_cmyk_jpegs_and_pngs_decode_to_the_same_rgb_crop():
  y, x = np.mgrid[0:90, 0:120]
  rgb = np.stack([x * 2, y * 2, x + y], -1).astype(np.uint8)
  box = (10, 5, 110, 85)
  for save in ({"format": "PNG"}, {"format": "JPEG", "quality": 95}):
    image = Image.fromarray(rgb)
    if save["format"] == "JPEG":
      image = image.convert("CMYK")  # as ImageNet's CMYK JPEGs
    buffer = io.BytesIO()
    image.save(buffer, **save)
    got = transforms._decode_crop_resize(buffer.getvalue(), lambda h, w: box, 32)
    want = _bilinear(rgb[5:85, 10:110], 32)
    assert np.abs(got - want).mean() < 3.0, save
