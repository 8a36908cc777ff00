"""The pretrained diffusion prior (diffusers), prompt embeddings, timestep schedule and the
camera-conditioned LoRA score model that shares the prior's frozen UNet."""
from .diffusion import DiffusionPrior
from .loading import DEFAULT_PRETRAINED, PriorWeightsUnavailable
from .prompts import VIEW_LABELS, PromptEmbeddings
from .score_model import CameraEmbedding, LoraScoreModel
from .timesteps import SqrtTimestepSchedule, TimestepSchedule

__all__ = ["DEFAULT_PRETRAINED", "VIEW_LABELS", "CameraEmbedding", "DiffusionPrior",
           "LoraScoreModel", "PriorWeightsUnavailable", "PromptEmbeddings", "SqrtTimestepSchedule", "TimestepSchedule"]
