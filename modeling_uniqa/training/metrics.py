"""IQA metrics: SRCC, KRCC, PLCC (raw and after the 4-parameter logistic fit), RMSE.

Usable directly (`iqa_metrics`), as `compute_metrics` for `transformers.Trainer`, and as an offline
`evaluate.Metric` (`IQAMetric()`, no download). Training-only module: needs scipy (and evaluate for `IQAMetric`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

METRIC_NAMES = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")


def logistic4(x: np.ndarray, beta1: float, beta2: float, beta3: float, beta4: float) -> np.ndarray:
    """VQEG's 4-parameter logistic: `(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`."""
    z = np.clip(-(x - beta3) / max(abs(beta4), 1e-12), -500.0, 500.0)
    return (beta1 - beta2) / (1.0 + np.exp(z)) + beta2


def fit_logistic(predictions: Sequence[float], references: Sequence[float]) -> np.ndarray:
    """Least-squares fit of `logistic4` mapping predictions onto references -> `(4,)` parameters.

    Fitted on standardised values (fast, well-conditioned) and mapped back to the inputs' scales.
    """
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(references, dtype=np.float64)
    x_mean, x_std, y_mean, y_std = x.mean(), x.std() or 1.0, y.mean(), y.std() or 1.0
    xs, ys = (x - x_mean) / x_std, (y - y_mean) / y_std
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        b1, b2, b3, b4 = optimize.curve_fit(
            logistic4, xs, ys, p0=[ys.max(), ys.min(), 0.0, 1.0], method="trf", max_nfev=2000
        )[0]
    return np.array([b1 * y_std + y_mean, b2 * y_std + y_mean, b3 * x_std + x_mean, abs(b4) * x_std])


def iqa_metrics(predictions: Sequence[float], references: Sequence[float]) -> dict[str, float]:
    """Agreement of predicted scores with MOS.

    Args:
        predictions, references: `(N,)` values, N >= 3, on any scale (RMSE assumes the same scale for both).

    Returns:
        `srcc` (Spearman), `krcc` (Kendall tau-b), `plcc` (Pearson, raw), `plcc_logistic` (Pearson after fitting
        `logistic4` from predictions to references; equals `plcc` when the fit fails), `rmse` (raw); NaN where a
        correlation is undefined (constant input).
    """
    x = np.asarray(predictions, dtype=np.float64).reshape(-1)
    y = np.asarray(references, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} predictions for {y.size} references")
    if x.size < 3:
        raise ValueError(f"need at least 3 predictions, got {x.size}")
    rmse = float(np.sqrt(np.mean((x - y) ** 2)))
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        nan = float("nan")
        return {"srcc": nan, "plcc": nan, "plcc_logistic": nan, "krcc": nan, "rmse": rmse}
    plcc = float(stats.pearsonr(x, y)[0])
    try:
        plcc_logistic = float(stats.pearsonr(logistic4(x, *fit_logistic(x, y)), y)[0])
    except (RuntimeError, ValueError):
        plcc_logistic = plcc
    if not np.isfinite(plcc_logistic):
        plcc_logistic = plcc
    return {
        "srcc": float(stats.spearmanr(x, y)[0]),
        "plcc": plcc,
        "plcc_logistic": plcc_logistic,
        "krcc": float(stats.kendalltau(x, y)[0]),
        "rmse": rmse,
    }


def compute_metrics(eval_prediction) -> dict[str, float]:
    """`compute_metrics` for `transformers.Trainer`: `EvalPrediction(predictions=(N,) scores, label_ids=(N,))`."""
    predictions = eval_prediction.predictions
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return iqa_metrics(np.asarray(predictions).reshape(-1), np.asarray(eval_prediction.label_ids).reshape(-1))


def _metric_class():
    import datasets
    import evaluate

    class IQAMetric(evaluate.Metric):
        """SRCC, PLCC (raw and logistic), KRCC and RMSE as an `evaluate` metric that works offline.

        `IQAMetric().compute(predictions=[...], references=[...])` -> the dict of [`iqa_metrics`].
        """

        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description="Image quality assessment agreement: SRCC, PLCC (raw, 4-parameter logistic), KRCC, RMSE.",
                citation="VQEG, Final report on the validation of objective models of video quality assessment, 2000.",
                inputs_description="predictions: predicted scores; references: MOS (same length, at least 3).",
                features=datasets.Features(
                    {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
                ),
            )

        def _compute(self, predictions, references) -> dict[str, float]:
            return iqa_metrics(predictions, references)

    return IQAMetric


def __getattr__(name: str):
    # `IQAMetric` is built on first access so that importing this module does not import `evaluate`.
    if name == "IQAMetric":
        cls = _metric_class()
        globals()["IQAMetric"] = cls
        return cls
    raise AttributeError(name)
