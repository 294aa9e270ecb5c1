"""The machine a benchmark ran on, for its JSON: processor, load, versions."""
from __future__ import annotations

import os
import platform
from importlib import metadata


def describe(*packages: str, devices: bool = False) -> dict:
  """CPU, cores, load, Python, ``packages``' versions and (``devices``) JAX's."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f
                 if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  described = {"platform": platform.platform(), "cpu": cpu,
               "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg(),
               "python": platform.python_version(),
               "xla_flags": os.environ.get("XLA_FLAGS", "")}
  for package in packages:
    try:
      described[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      pass
  if devices:
    import jax  # pylint: disable=g-import-not-at-top
    device = jax.devices()[0]
    described.update(backend=device.platform, device_kind=device.device_kind,
                     num_devices=jax.device_count())
  return described
