"""Training engines for batches of MTJ-pair networks (DESIGN.md 5-6)."""

from .config import (DIGITAL_MODES, GRAD_MODES, MTJ_MODES, Distillation, PairNeuron, Schedule,
                     TrainConfig)
from .distill import teacher_logits
from .trainer import evaluate, train

__all__ = ["DIGITAL_MODES", "GRAD_MODES", "MTJ_MODES", "Distillation", "PairNeuron", "Schedule",
           "TrainConfig", "evaluate", "teacher_logits", "train"]
