"""IQA metrics against scipy on known inputs, the Trainer hook and the offline `evaluate` metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from transformers import EvalPrediction

from modeling_uniqa.training.metrics import IQAMetric, compute_metrics, fit_logistic, iqa_metrics, logistic4


def test_known_values():
    result = iqa_metrics([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])
    assert result["srcc"] == pytest.approx(0.8207826816681233)
    assert result["krcc"] == pytest.approx(0.7378647873726218)
    assert result["plcc"] == pytest.approx(0.8320502943378437)
    assert result["rmse"] == pytest.approx(math.sqrt((16 + 16 + 16 + 16 + 4) / 5))
    perfect = iqa_metrics([0.1, 0.4, 0.2, 0.9], [10, 40, 20, 90])
    assert perfect["srcc"] == pytest.approx(1.0) and perfect["plcc"] == pytest.approx(1.0)


def test_against_scipy_random():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = np.tanh(2 * x) * 3 + rng.normal(scale=0.3, size=200)
    result = iqa_metrics(x, y)
    assert result["srcc"] == pytest.approx(stats.spearmanr(x, y)[0])
    assert result["krcc"] == pytest.approx(stats.kendalltau(x, y)[0])
    assert result["plcc"] == pytest.approx(stats.pearsonr(x, y)[0])
    # a sigmoid relation: the logistic fit must straighten it, so PLCC rises
    assert result["plcc_logistic"] > result["plcc"] + 0.01
    fitted = logistic4(x, *fit_logistic(x, y))
    assert result["plcc_logistic"] == pytest.approx(stats.pearsonr(fitted, y)[0])


def test_logistic_recovers_parameters():
    x = np.linspace(-3, 3, 50)
    y = logistic4(x, 5.0, 1.0, 0.5, 0.7)
    assert np.allclose(logistic4(x, *fit_logistic(x, y)), y, atol=1e-6)


def test_degenerate_inputs():
    constant = iqa_metrics([1, 1, 1], [1, 2, 3])
    assert math.isnan(constant["srcc"]) and constant["rmse"] == pytest.approx(math.sqrt(5 / 3))
    with pytest.raises(ValueError, match="at least 3"):
        iqa_metrics([1, 2], [1, 2])
    with pytest.raises(ValueError, match="3 predictions for 4"):
        iqa_metrics([1, 2, 3], [1, 2, 3, 4])


def test_trainer_compute_metrics_and_evaluate_metric():
    predictions, labels = np.array([0.2, 0.5, 0.4, 0.9]), np.array([0.1, 0.6, 0.3, 0.8])
    expected = iqa_metrics(predictions, labels)
    assert compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels)) == expected
    assert compute_metrics(EvalPrediction(predictions=(predictions,), label_ids=labels)) == expected
    metric = IQAMetric()
    assert metric.compute(predictions=predictions.tolist(), references=labels.tolist()) == pytest.approx(expected)
    for p, r in zip(predictions, labels, strict=True):
        metric.add(prediction=p, reference=r)
    assert metric.compute() == pytest.approx(expected)
