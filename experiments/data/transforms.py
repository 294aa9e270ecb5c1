"""Image transforms of the recipes: decoding, training augmentation, normalisation.

Images go out float32 NHWC, normalised per channel by the dataset's mean and
standard deviation (``datasets.RECIPES``). mnist and fashion_mnist are only
normalised (``augment`` has no effect). imagenet2012 (JPEG bytes in): training
takes a random-resized crop resized to ``image_size`` and flipped with
probability 1/2; evaluation resizes the shorter side to
``image_size * 256 / 224`` and takes the central ``image_size`` square; with
``augment=False`` training images get the evaluation transform. The random
numbers come from the sampler: row ``j`` of ``uniforms`` holds those of the
example at global position ``j`` of the batch. The crop, the decoding and the
resize in detail: docs/training.md, "Input".
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import numpy as np

from experiments.data.datasets import DataConfig

# Random-resized crop: attempts, each (area, log aspect ratio, x, y), + flip.
_CROP_ATTEMPTS = 10

Box = tuple[float, float, float, float]  # (left, top, right, bottom)


def _normalise(images: np.ndarray, config: DataConfig,
               out: np.ndarray | None = None) -> np.ndarray:
  """(uint8 images - mean) / std in float32, into ``out`` if given."""
  recipe = config.recipe
  channels = images.shape[-1]
  # On rows of width * channels values, the per-channel constants tiled: a
  # long inner loop instead of one of length 3.
  rows = images.reshape(-1, images.shape[-2] * channels)
  mean = np.tile(np.asarray(recipe.mean, np.float32) * 255.0, images.shape[-2])
  inv_std = np.tile(1.0 / (np.asarray(recipe.std, np.float32) * 255.0),
                    images.shape[-2])
  out = np.empty(images.shape, np.float32) if out is None else out
  out_rows = out.reshape(rows.shape)
  np.subtract(rows, mean, out=out_rows, dtype=np.float32)
  out_rows *= inv_std
  return out


def _random_resized_crop_box(height: int, width: int, u: np.ndarray) -> Box:
  area = height * width
  for attempt in range(_CROP_ATTEMPTS):
    a, r, x, y = u[4 * attempt:4 * attempt + 4]
    target_area = area * (0.08 + a * (1.0 - 0.08))
    aspect = math.exp(math.log(3 / 4) + r * (math.log(4 / 3) - math.log(3 / 4)))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      left = min(int(x * (width - w + 1)), width - w)
      top = min(int(y * (height - h + 1)), height - h)
      return (left, top, left + w, top + h)
  side = min(height, width)  # Fallback: the central square.
  left, top = (width - side) // 2, (height - side) // 2
  return (left, top, left + side, top + side)


def _central_crop_box(height: int, width: int, size: int) -> Box:
  # Central crop covering size/resize of the shorter side == resize + crop.
  side = min(height, width) * size / (size * 256 / 224)
  left, top = (width - side) / 2, (height - side) / 2
  return (left, top, left + side, top + side)


def _decode(jpeg: bytes, crop_box: Callable[[int, int], Box], size: int
            ) -> tuple[np.ndarray, Box]:
  """RGB pixels of ``jpeg``, reduced where the crop allows; the crop box on them."""
  import simplejpeg  # pylint: disable=g-import-not-at-top
  try:
    height, width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
    left, top, right, bottom = crop_box(height, width)
    # The smallest JPEG scale 1/f (f = 1, 2, 4, 8) at which the crop still
    # has >= size pixels each way.
    f = 1
    while f < 8 and min(right - left, bottom - top) >= 2 * f * size:
      f *= 2
    pixels = simplejpeg.decode_jpeg(jpeg, "RGB", min_factor=f,
                                    min_height=math.ceil(height / f),
                                    min_width=math.ceil(width / f))
  except ValueError:  # not a JPEG (ImageNet's training set has a PNG)
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with Image.open(io.BytesIO(jpeg)) as image:
      pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    left, top, right, bottom = crop_box(height, width)
  scale = pixels.shape[1] / width
  return pixels, (left * scale, top * scale, right * scale, bottom * scale)


def _decode_crop_resize(jpeg: bytes, crop_box: Callable[[int, int], Box],
                        size: int) -> np.ndarray:
  """Decodes ``jpeg`` (reduced where the crop allows), crops, resizes."""
  import cv2  # pylint: disable=g-import-not-at-top
  pixels, box = _decode(jpeg, crop_box, size)
  left, top, right, bottom = (max(int(round(v)), 0) for v in box)
  crop = pixels[top:max(bottom, top + 1), left:max(right, left + 1)]
  return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)


def _imagenet_train(jpeg: bytes, u: np.ndarray, size: int) -> np.ndarray:
  import cv2  # pylint: disable=g-import-not-at-top
  out = _decode_crop_resize(
      jpeg, lambda height, width: _random_resized_crop_box(height, width, u), size)
  return cv2.flip(out, 1) if u[4 * _CROP_ATTEMPTS] < 0.5 else out


def _imagenet_eval(jpeg: bytes, size: int) -> np.ndarray:
  return _decode_crop_resize(
      jpeg, lambda height, width: _central_crop_box(height, width, size), size)


def transform(config: DataConfig, images: np.ndarray | Sequence,
              uniforms: np.ndarray | None) -> np.ndarray:
  """Images -> normalised float32 [n, H, W, C]; ``uniforms=None``: evaluation.

  ``images``: uint8 arrays (or one stacked array), or JPEG bytes for
  imagenet2012; ``uniforms``: [n, num_uniforms(config)] from the sampler.
  """
  image_shape = config.image_shape
  if config.recipe.jpeg:
    # Each image is normalised as soon as it is made, while it is in cache.
    out = np.empty((len(images), *image_shape), np.float32)
    for i, image in enumerate(images):
      if uniforms is None:
        image = _imagenet_eval(image, image_shape[0])
      else:
        image = _imagenet_train(image, uniforms[i], image_shape[0])
      _normalise(image, config, out[i])
    return out
  images = np.stack(images) if isinstance(images, list) else images
  return _normalise(images.reshape((-1, *image_shape)), config)


def num_uniforms(config: DataConfig) -> int:
  """How many random numbers the training augmentation takes per example."""
  return 4 * _CROP_ATTEMPTS + 1 if config.augment and config.recipe.jpeg else 0
