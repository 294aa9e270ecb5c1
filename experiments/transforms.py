"""Image transforms of the recipes: normalisation and training augmentation.

Images come in as uint8 and go out float32 NHWC, normalised per channel by the
dataset's mean and standard deviation (``datasets.RECIPES``).

* mnist, fashion_mnist: no augmentation (the paper-style small CNN recipe);
  normalisation only. ``augment`` has no effect.
* cifar10: training images zero-padded by 4 pixels, randomly cropped back to
  32x32 and flipped horizontally with probability 1/2.
* imagenet2012: training: random-resized crop (area 8%-100%, aspect ratio
  3/4-4/3, 10 attempts, else a central crop) resized to ``image_size`` and
  flipped with probability 1/2. Evaluation: resize the shorter side to
  ``image_size * 256 / 224`` and take the central ``image_size`` square.
  Done with PIL (bilinear), so it runs without a GPU and without TensorFlow.

With ``augment=False`` the training images get the evaluation transform. The
random numbers come from the sampler: row ``j`` of ``uniforms`` holds those of
the example at global position ``j`` of the batch, so the augmentation does
not depend on how the batch is split over processes or threads.
"""

from __future__ import annotations

import math

import numpy as np

from experiments.datasets import RECIPES

# Random-resized crop: attempts, each (area, log aspect ratio, x, y), + flip.
_CROP_ATTEMPTS = 10


def _normalise(images: np.ndarray, name: str) -> np.ndarray:
  recipe = RECIPES[name]
  mean = np.asarray(recipe.mean, np.float32) * 255.0
  inv_std = 1.0 / (np.asarray(recipe.std, np.float32) * 255.0)
  return (np.asarray(images, np.float32) - mean) * inv_std


def _cifar_augment(images: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  out = np.empty_like(images)
  offsets_y = np.minimum((uniforms[:, 0] * 9).astype(int), 8)
  offsets_x = np.minimum((uniforms[:, 1] * 9).astype(int), 8)
  for i in range(n):
    crop = padded[i, offsets_y[i]:offsets_y[i] + h, offsets_x[i]:offsets_x[i] + w]
    out[i] = crop[:, ::-1] if uniforms[i, 2] < 0.5 else crop
  return out


def _resize(image: np.ndarray, box: tuple[float, float, float, float],
            size: tuple[int, int]) -> np.ndarray:
  """Crops ``box`` = (left, top, right, bottom) and resizes it to (w, h)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pil = Image.fromarray(np.ascontiguousarray(image))
  return np.asarray(pil.resize(size, Image.Resampling.BILINEAR, box=box))


def _random_resized_crop_box(height, width, u):
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


def _imagenet_train(image: np.ndarray, u: np.ndarray, size: int) -> np.ndarray:
  box = _random_resized_crop_box(image.shape[0], image.shape[1], u)
  out = _resize(image, box, (size, size))
  return out[:, ::-1] if u[4 * _CROP_ATTEMPTS] < 0.5 else out


def _imagenet_eval(image: np.ndarray, size: int) -> np.ndarray:
  height, width = image.shape[:2]
  # Central crop covering size/resize of the shorter side == resize + crop.
  side = min(height, width) * size / (size * 256 / 224)
  left, top = (width - side) / 2, (height - side) / 2
  return _resize(image, (left, top, left + side, top + side), (size, size))


def transform(name: str, images, uniforms: np.ndarray | None,
              image_shape: tuple[int, int, int]) -> np.ndarray:
  """uint8 images -> normalised float32 [n, H, W, C]; uniforms=None: eval."""
  kind = RECIPES[name].augmentation
  if kind == "imagenet":
    size = image_shape[0]
    if uniforms is None:
      out = [_imagenet_eval(im, size) for im in images]
    else:
      out = [_imagenet_train(im, u, size) for im, u in zip(images, uniforms)]
    images = np.stack(out) if out else np.zeros((0, *image_shape), np.uint8)
  else:
    images = np.stack(images) if isinstance(images, list) else images
    images = images.reshape((-1, *image_shape))
    if kind == "cifar" and uniforms is not None:
      images = _cifar_augment(images, uniforms)
  return _normalise(images, name)


def num_uniforms(name: str) -> int:
  """How many random numbers the training augmentation takes per example."""
  return {"none": 0, "cifar": 3, "imagenet": 4 * _CROP_ATTEMPTS + 1}[
      RECIPES[name].augmentation]
