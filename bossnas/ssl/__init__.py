"""Self-supervised parts of BossNAS as small, independent modules and functions.

They know nothing about search spaces or training loops, so each is testable alone.
"""

from bossnas.ssl.heads import (
    ChannelAdapter,
    MLPHead,
    PredictionHead,
    ProjectionHead,
    kaiming_init_,
    normal_init_,
)
from bossnas.ssl.losses import BYOLRegressionLoss, byol_regression_loss
from bossnas.ssl.momentum import cosine_momentum, ema_update_
from bossnas.ssl.targets import ensemble_target, population_centre

__all__ = [
    "BYOLRegressionLoss",
    "ChannelAdapter",
    "MLPHead",
    "PredictionHead",
    "ProjectionHead",
    "byol_regression_loss",
    "cosine_momentum",
    "ema_update_",
    "ensemble_target",
    "kaiming_init_",
    "normal_init_",
    "population_centre",
]
