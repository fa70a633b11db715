"""Simple no-reference quality baselines to measure models against: a no-learning sharpness score and BRISQUE.

- [`gradient_energy`]: the mean squared Sobel gradient magnitude of the grey image (sharper: higher). No learning.
- [`brisque_features`]: the 36 natural-scene-statistics features of BRISQUE (Mittal, Moorthy and Bovik, "No-Reference
  Image Quality Assessment in the Spatial Domain", IEEE TIP 2012), written here from the paper with numpy/scipy:
  the PyPI packages that compute them either need OpenCV and libsvm and ship a fixed pre-trained regressor
  (`brisque`) or keep them private and download weights (`piq`, `pyiqa`). [`BrisqueRegressor`] learns MOS from
  them with an RBF support-vector regression (scikit-learn), its hyper-parameters chosen on a validation set,
  like the adapter's checkpoint.

Training-only module: needs scipy and scikit-learn (the `train` extra).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage, special

from ..image_processing_uniqa import load_image
from .metrics import iqa_metrics


def grey(image: Any) -> np.ndarray:
    """An image (path, PIL image or array of any mode) -> `(H, W)` float64 luminance in [0, 255] (ITU-R 601)."""
    return np.asarray(load_image(image).convert("L"), dtype=np.float64)


def gradient_energy(image: Any) -> float:
    """Mean squared gradient magnitude (Sobel) of the grey image scaled to [0, 1]: blur lowers it, so higher is
    sharper. Noise raises it too: it is a sharpness score, not a quality model."""
    g = grey(image) / 255.0
    return float(np.mean(ndimage.sobel(g, 0) ** 2 + ndimage.sobel(g, 1) ** 2))


# Moment ratios of the generalised Gaussian over a grid of shapes: rho(a) = G(1/a) G(3/a) / G(2/a)^2.
_SHAPES = np.arange(0.2, 10.0, 0.001)
_RHO = np.exp(special.gammaln(1 / _SHAPES) + special.gammaln(3 / _SHAPES) - 2 * special.gammaln(2 / _SHAPES))


def _shape_for(rho: float) -> float:
    """The generalised Gaussian shape whose moment ratio is closest to `rho`."""
    return float(_SHAPES[np.argmin(np.abs(_RHO - rho))])


def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """Generalised Gaussian (zero mean) by moment matching -> `(shape, variance)`."""
    x = x.ravel()
    variance = float(np.mean(x**2))
    mean_abs = float(np.mean(np.abs(x)))
    return _shape_for(variance / max(mean_abs**2, 1e-12)), variance


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian by moment matching (Lasmar, Stitou and Berthoumieu, 2009) ->
    `(shape, mean, left variance, right variance)`."""
    x = x.ravel()
    left, right = x[x < 0], x[x > 0]
    left_var = float(np.mean(left**2)) if left.size else 0.0
    right_var = float(np.mean(right**2)) if right.size else 0.0
    if left_var == 0.0 or right_var == 0.0:
        return _shape_for(1.0), 0.0, left_var, right_var
    gamma = np.sqrt(left_var / right_var)
    r_hat = float(np.mean(np.abs(x))) ** 2 / float(np.mean(x**2))
    r_hat_norm = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
    shape = _shape_for(1.0 / r_hat_norm)  # r(a) = 1 / rho(a)
    g1, g2, g3 = (special.gammaln(k / shape) for k in (1, 2, 3))
    mean = (np.sqrt(right_var) - np.sqrt(left_var)) * np.exp(0.5 * (g1 - g3) + g2 - g1)
    return shape, float(mean), left_var, right_var


def mscn(luminance: np.ndarray, sigma: float = 7 / 6, c: float = 1.0) -> np.ndarray:
    """Mean-subtracted, contrast-normalised coefficients: `(I - mu) / (s + c)` with a Gaussian-weighted local mean
    `mu` and deviation `s`."""
    mu = ndimage.gaussian_filter(luminance, sigma, truncate=3.0)
    deviation = np.sqrt(np.abs(ndimage.gaussian_filter(luminance**2, sigma, truncate=3.0) - mu**2))
    return (luminance - mu) / (deviation + c)


# Neighbour offsets of the pairwise products: horizontal, vertical, main and secondary diagonals.
_PAIRS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _scale_features(luminance: np.ndarray) -> list[float]:
    coefficients = mscn(luminance)
    features = list(ggd_fit(coefficients))
    h, w = coefficients.shape
    for dy, dx in _PAIRS:  # coefficient (y, x) times its neighbour (y + dy, x + dx), where both exist
        a = coefficients[: h - dy, max(0, -dx) : w - max(0, dx)]
        b = coefficients[dy:, max(0, dx) : w - max(0, -dx)]
        features += aggd_fit(a * b)
    return features


def brisque_features(image: Any) -> np.ndarray:
    """BRISQUE's 36 features of an image: at the full and the half resolution, the MSCN coefficients' generalised
    Gaussian (shape, variance) and, for each of the 4 neighbour products, the asymmetric one's (shape, mean, left and
    right variance)."""
    luminance = grey(image)
    half = Image.fromarray(luminance.astype(np.float32), mode="F")
    half = half.resize((max(1, half.width // 2), max(1, half.height // 2)), Image.Resampling.BICUBIC)
    return np.array(_scale_features(luminance) + _scale_features(np.asarray(half, dtype=np.float64)))


class BrisqueRegressor:
    """BRISQUE features -> MOS: standardised features, RBF support-vector regression (scikit-learn).

    `fit(train_features, train_targets, validation_features, validation_targets)` tries every `(C, gamma)` of the
    grid on the training set and keeps the one with the best validation SRCC (ties: the first).
    """

    C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
    GAMMA_GRID = (0.01, 0.03, 0.1)

    def __init__(self, epsilon: float = 0.01):
        self.epsilon = epsilon
        self.model = None
        self.selection: dict[str, Any] = {}

    def _pipeline(self, c: float, gamma: float):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVR

        return make_pipeline(StandardScaler(), SVR(kernel="rbf", C=c, gamma=gamma, epsilon=self.epsilon))

    def fit(
        self,
        features: np.ndarray,
        targets: Sequence[float],
        validation_features: np.ndarray,
        validation_targets: Sequence[float],
    ) -> BrisqueRegressor:
        best = None
        for c, gamma in itertools.product(self.C_GRID, self.GAMMA_GRID):
            model = self._pipeline(c, gamma).fit(features, targets)
            srcc = iqa_metrics(model.predict(validation_features), validation_targets)["srcc"]
            if best is None or srcc > best[0]:
                best = (srcc, c, gamma, model)
        srcc, c, gamma, self.model = best
        self.selection = {"C": c, "gamma": gamma, "validation_srcc": float(srcc)}
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("BrisqueRegressor.predict before fit")
        return self.model.predict(features)
