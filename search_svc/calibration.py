"""Calibrated fusion: the signals' scores of a photo for a query -> the probability that the photo
is relevant, so one cut-off means the same for every query (docs/SEARCH.md).

A logistic model per set of available signals, over features of each signal: its score (0 when
the photo has none) and, for the vector signals, its gap to the query's best score of that signal
(<= 0). The models without CLIP are fitted on the tuning part of bench/eval_set.json by
`bench/retrieval.py --fit`, which writes calibration.json beside this file. No CLIP weights can be
had here, so CLIP's terms are a prior in the same file: added to the fitted log-odds of the other
signals, as independent evidence.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Iterable, Mapping

DEFAULT_PATH = Path(__file__).with_name("calibration.json")
CLIP, TEXT, KEYWORD = "clip", "text", "keyword"
VECTOR_SIGNALS = (CLIP, TEXT)


def model_key(available: Iterable[str]) -> str:
    """The key of the model for a set of available signals: "keyword+text"."""
    return "+".join(sorted(available))


def gap_feature(signal: str) -> str:
    return f"{signal}_gap"


def features(scores: Mapping[str, float], best: Mapping[str, float], available: Iterable[str]) -> dict[str, float]:
    """A photo's features: each available signal's score (0 without one) and, for vector signals,
    that score minus the best score of the signal over the query's candidates."""
    result = {}
    for signal in available:
        score = scores.get(signal, 0.0)
        result[signal] = score
        if signal in VECTOR_SIGNALS:
            result[gap_feature(signal)] = score - best.get(signal, score)
    return result


@dataclasses.dataclass(frozen=True)
class LogisticModel:
    intercept: float
    weights: dict[str, float]  # feature -> coefficient

    def log_odds(self, values: Mapping[str, float], scale: Mapping[str, float] | None = None) -> float:
        """intercept + sum of coefficient * value; `scale` multiplies a signal's terms (its weight)."""
        total = self.intercept
        for feature, coefficient in self.weights.items():
            signal = feature.removesuffix("_gap")
            total += coefficient * values.get(feature, 0.0) * (scale.get(signal, 1.0) if scale else 1.0)
        return total

    def to_json(self) -> dict:
        return {"intercept": self.intercept, "weights": self.weights}

    @classmethod
    def from_json(cls, data: dict) -> LogisticModel:
        return cls(float(data["intercept"]), {k: float(v) for k, v in data["weights"].items()})


@dataclasses.dataclass(frozen=True)
class Calibration:
    models: dict[str, LogisticModel]  # fitted, by model_key of the offline signals
    clip_prior: LogisticModel  # CLIP's own terms; its intercept serves CLIP alone
    threshold: float  # default cut-off on the probability
    source: str = ""  # how and on what it was fitted

    @classmethod
    def load(cls, path: Path | None = None) -> Calibration:
        path = path or DEFAULT_PATH
        try:
            data = json.loads(Path(path).read_text())
            return cls(models={k: LogisticModel.from_json(v) for k, v in data["models"].items()},
                       clip_prior=LogisticModel.from_json(data["clip_prior"]),
                       threshold=float(data["threshold"]), source=data.get("source", ""))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot read the search calibration {path}: {e}") from e

    def to_json(self) -> dict:
        return {"source": self.source, "threshold": self.threshold,
                "models": {k: m.to_json() for k, m in sorted(self.models.items())},
                "clip_prior": self.clip_prior.to_json()}

    def log_odds(self, values: Mapping[str, float], available: Iterable[str],
                 scale: Mapping[str, float] | None = None) -> float:
        """The log-odds of relevance of a photo with these features, given the available signals."""
        available = set(available)
        offline = available - {CLIP}
        total = 0.0
        if offline:
            model = self.models.get(model_key(offline))
            if model is None:
                raise ValueError(f"the search calibration has no model for the signals {model_key(offline)}")
            total += model.log_odds(values, scale)
        if CLIP in available:
            prior = self.clip_prior
            # Alone, CLIP's intercept places its prior; with others, only its evidence is added.
            total += prior.log_odds(values, scale) - (0.0 if not offline else prior.intercept)
        return total

    def probability(self, values: Mapping[str, float], available: Iterable[str],
                    scale: Mapping[str, float] | None = None) -> float:
        return sigmoid(self.log_odds(values, available, scale))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
