"""LARS (Layer-wise Adaptive Rate Scaling) and LAMB for optax.

You, Gitman and Ginsburg, "Scaling SGD Batch Size to 32K for ImageNet
Training", Technical Report UCB/EECS-2017-156, 2017 (arXiv:1708.03888).
You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
minutes", ICLR 2020 (arXiv:1904.00962).
"""

from lars_optax._diagnostics import trust_ratios
from lars_optax._diagnostics import trust_ratios_by_name
from lars_optax._lamb import lamb
from lars_optax._lars import lars
from lars_optax._lars import scale_by_lars
from lars_optax._lars import ScaleByLarsState
from lars_optax._masks import exclude_bias_and_norm
from lars_optax._masks import mask_by_name
from lars_optax._masks import parameter_names
from lars_optax._schedules import LarsPreset
from lars_optax._schedules import mlperf_resnet50_lars
from lars_optax._schedules import scale_learning_rate
from lars_optax._schedules import warmup_polynomial_decay_schedule

# The release: pyproject.toml reads it from here ([tool.setuptools.dynamic]).
__version__ = "0.1.0"

__all__ = (
    "LarsPreset",
    "ScaleByLarsState",
    "exclude_bias_and_norm",
    "lamb",
    "lars",
    "mask_by_name",
    "mlperf_resnet50_lars",
    "parameter_names",
    "scale_by_lars",
    "scale_learning_rate",
    "trust_ratios",
    "trust_ratios_by_name",
    "warmup_polynomial_decay_schedule",
)
