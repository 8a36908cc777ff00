"""The paper's metrics for a trained run: CLIP similarity between rendered views and the prompt,
and FID between renders and prior samples. CLI: python -m l2vsd_ext.eval RUN_DIR."""
from .clip_model import DEFAULT_CLIP_MODEL, ModelUnavailable, image_embeddings, load_clip, text_embedding
from .clip_similarity import clip_similarity
from .fid import ClipImageFeatures, frechet_distance
from .prior_samples import build_pipeline, sample_prior

__all__ = ["DEFAULT_CLIP_MODEL", "ModelUnavailable", "image_embeddings", "load_clip", "text_embedding",
           "clip_similarity", "ClipImageFeatures", "frechet_distance", "build_pipeline", "sample_prior"]
