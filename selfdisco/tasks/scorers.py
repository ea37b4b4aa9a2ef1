"""Sentiment scorers: the reward of the sentiment task. Each has a `label` that reports carry.

- "vader" (default): VADER's compound score from the vaderSentiment package, in [-1, 1].
- "hf:MODEL": a Hugging Face text-classification model (a Hub id or a local directory); the
  reward is its probability of the positive label, in [0, 1], as in the paper's IMDb experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from selfdisco.errors import UserError
from selfdisco.progress import Progress


class Scorer(Protocol):
    label: str

    def score(self, texts: Sequence[str]) -> list[float]: ...


def scorer_label(spec: str) -> str:
    """How reports name the scorer `spec` ("vader" or "hf:MODEL"), without loading it."""
    if spec == "vader":
        return "vader compound [-1, 1]"
    if spec.startswith("hf:") and len(spec) > 3:
        return f"{spec} P(positive) [0, 1]"
    raise UserError(f"unknown sentiment scorer {spec!r}; use 'vader' or 'hf:MODEL' (a Hugging "
                    "Face text-classification model id or local directory)")


class VaderScorer:
    label = scorer_label("vader")

    def __init__(self) -> None:
        # lazy: loads vaderSentiment
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, texts: Sequence[str]) -> list[float]:
        return [float(self._analyzer.polarity_scores(text)["compound"]) for text in texts]


class ClassifierScorer:
    """P(positive) from a sequence-classification model; the positive label is found by name."""

    def __init__(self, model: str, *, batch_size: int = 16, max_length: int = 256):
        # lazy: loads torch
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(model)
            self._model = AutoModelForSequenceClassification.from_pretrained(model)
        except Exception as err:  # noqa: BLE001 - any loading failure is reported to the user
            raise UserError(f"could not load the sentiment classifier {model!r}: "
                            f"{type(err).__name__}: {str(err)[:300]}") from None
        self._model.eval()
        self._torch = torch
        self.positive_index = positive_label_index(self._model.config.id2label)
        self.batch_size, self.max_length = batch_size, max_length
        self.label = scorer_label(f"hf:{model}")

    def score(self, texts: Sequence[str]) -> list[float]:
        scores: list[float] = []
        with Progress("scoring", total=len(texts), unit="texts") as progress:
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start:start + self.batch_size])
                encoded = self._tokenizer(batch, padding=True, truncation=True,
                                          max_length=self.max_length, return_tensors="pt")
                with self._torch.no_grad():
                    logits = self._model(**encoded).logits
                probs = logits.float().softmax(dim=-1)[:, self.positive_index]
                scores.extend(float(p) for p in probs)
                progress.advance(len(batch))
        return scores


def positive_label_index(id2label: dict[Any, str]) -> int:
    """The index of the label that means "positive" (POSITIVE, pos, LABEL_1 of two, ...)."""
    labels = {int(k): str(v).lower() for k, v in id2label.items()}
    for index, name in labels.items():
        if name.startswith("pos"):
            return index
    if len(labels) == 2 and set(labels.values()) == {"label_0", "label_1"}:
        return 1
    raise UserError(f"the sentiment classifier's labels {sorted(labels.values())} name no "
                    "positive class; use a model with a POSITIVE label")


def make_scorer(spec: str) -> Scorer:
    """A scorer from its name: "vader" or "hf:MODEL"."""
    scorer_label(spec)  # rejects unknown names
    return VaderScorer() if spec == "vader" else ClassifierScorer(spec[3:])
