"""Prompt embeddings computed once per prompt, with DreamFusion's view-dependent suffixes."""
from __future__ import annotations

import warnings

import torch

VIEW_LABELS = ("front", "side", "back", "overhead")


class PromptEmbeddings:
    """Text embeddings of `prompt + ", <view> view"` for each view label, of the prompt alone, and
    of the negative prompt, computed once. `get(view_labels)` returns (cond, uncond) batched in that
    order; `plain(n)` the prompt without view suffix (what threestudio's VSD gives its LoRA)."""

    def __init__(self, prior, prompt: str, negative_prompt: str = "", view_dependent: bool = True):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("PromptEmbeddings: argument 'prompt' must be a non-empty string")
        self.prompt, self.view_dependent = prompt, view_dependent
        suffixes = [f", {view} view" if view_dependent else "" for view in VIEW_LABELS]
        body = fit_prompt(getattr(prior, "tokenizer", None), prompt, suffixes)
        texts = [body + suffix for suffix in suffixes]
        embeddings = prior.encode_text(texts + [body, negative_prompt])
        self._cond = {view: embeddings[i] for i, view in enumerate(VIEW_LABELS)}
        self._plain = embeddings[-2]
        self._uncond = embeddings[-1]

    def plain(self, batch: int) -> torch.Tensor:
        return self._plain.expand(batch, *self._plain.shape)

    def get(self, view_labels) -> tuple[torch.Tensor, torch.Tensor]:
        unknown = set(view_labels) - set(VIEW_LABELS)
        if unknown:
            raise ValueError(f"PromptEmbeddings.get: unknown view labels {sorted(unknown)}; "
                             f"expected {VIEW_LABELS}")
        cond = torch.stack([self._cond[v] for v in view_labels])
        uncond = self._uncond.expand(len(view_labels), *self._uncond.shape)
        return cond, uncond


def fit_prompt(tokenizer, prompt: str, suffixes) -> str:
    """`prompt`, cut so that prompt + the longest suffix fits the tokenizer's limit: the text
    encoder sees at most model_max_length tokens, and cutting the whole text would drop the view
    suffix (front/side/back embeddings would become identical). Warns when it cuts."""
    if tokenizer is None or not hasattr(tokenizer, "model_max_length"):
        return prompt
    room = tokenizer.model_max_length - 2  # start and end tokens
    count = lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    longest_suffix = max(count(s) for s in suffixes) if any(suffixes) else 0
    if len(ids) + longest_suffix <= room:
        return prompt
    keep = room - longest_suffix
    if keep < 1:
        warnings.warn(f"prompt: the tokenizer's {tokenizer.model_max_length}-token limit leaves no room for the "
                      "view suffix; prompt and suffix are cut together", stacklevel=3)
        return prompt
    body = tokenizer.decode(ids[:keep]).strip()
    warnings.warn(f"prompt: {len(ids)} tokens, more than the {room - longest_suffix} that fit with the view "
                  f"suffix in the text encoder's {tokenizer.model_max_length}; using '{body}'", stacklevel=3)
    return body
