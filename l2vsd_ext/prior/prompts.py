"""Prompt embeddings computed once per prompt, with DreamFusion's view-dependent suffixes."""
from __future__ import annotations

import torch

VIEW_LABELS = ("front", "side", "back", "overhead")


class PromptEmbeddings:
    """Text embeddings of `prompt + ", <view> view"` for each view label, and of the negative
    prompt, computed once. `get(view_labels)` returns (cond, uncond) batched in that order."""

    def __init__(self, prior, prompt: str, negative_prompt: str = "", view_dependent: bool = True):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("PromptEmbeddings: argument 'prompt' must be a non-empty string")
        self.prompt, self.view_dependent = prompt, view_dependent
        texts = [f"{prompt}, {view} view" if view_dependent else prompt for view in VIEW_LABELS]
        embeddings = prior.encode_text(texts + [negative_prompt])
        self._cond = {view: embeddings[i] for i, view in enumerate(VIEW_LABELS)}
        self._uncond = embeddings[-1]

    def get(self, view_labels) -> tuple[torch.Tensor, torch.Tensor]:
        unknown = set(view_labels) - set(VIEW_LABELS)
        if unknown:
            raise ValueError(f"PromptEmbeddings.get: unknown view labels {sorted(unknown)}; "
                             f"expected {VIEW_LABELS}")
        cond = torch.stack([self._cond[v] for v in view_labels])
        uncond = self._uncond.expand(len(view_labels), *self._uncond.shape)
        return cond, uncond
