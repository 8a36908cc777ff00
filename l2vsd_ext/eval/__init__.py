"""The paper's metrics for a trained run: CLIP similarity between rendered views and the prompt,
and FID between renders and prior samples. CLI: python -m l2vsd_ext.eval RUN_DIR."""
from .clip_model import DEFAULT_CLIP_MODEL, ModelUnavailable, image_embeddings, load_clip, text_embedding
from .clip_similarity import clip_similarity
from .fid import ClipImageFeatures, frechet_distance, image_features
from .frechet import frechet_distance_of_features
from .inception import FidInceptionV3
from .inception_weights import InceptionWeightsUnavailable, load_fid_inception, resolve_inception_weights
from .prior_samples import build_pipeline, sample_prior

__all__ = ["DEFAULT_CLIP_MODEL", "ModelUnavailable", "image_embeddings", "load_clip", "text_embedding",
           "clip_similarity", "ClipImageFeatures", "frechet_distance", "image_features",
           "frechet_distance_of_features", "FidInceptionV3",
           "InceptionWeightsUnavailable", "load_fid_inception", "resolve_inception_weights",
           "build_pipeline", "sample_prior"]
