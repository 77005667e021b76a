"""Accuracy measures from a confusion matrix, and the area-weighted estimators of a stratified sample.

Matrices are ``[map class, reference class]`` (rows: the map, columns: the reference), as in
Olofsson et al. (2014) "Good practices for estimating area and assessing accuracy of land change",
Remote Sensing of Environment 148: 42-57, whose equations and worked example (section 5) the
stratified estimators follow; the strata are the map classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.96


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.asarray(den) > 0, np.asarray(num, dtype=np.float64) / np.asarray(den), np.nan)


def _clean(value: float) -> float | None:
    """JSON-friendly: NaN (undefined, e.g. a class absent from both) becomes None."""
    value = float(value)
    return None if math.isnan(value) else value


def confusion_scores(counts: np.ndarray, names: Sequence[str]) -> dict:
    """Counts and proportions, user's and producer's accuracy, F1 and IoU per class, mIoU, OA, kappa."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    diagonal = np.diag(counts)
    mapped, referenced = counts.sum(axis=1), counts.sum(axis=0)
    users = _ratio(diagonal, mapped)
    producers = _ratio(diagonal, referenced)
    f1 = _ratio(2 * diagonal, mapped + referenced)
    iou = _ratio(diagonal, mapped + referenced - diagonal)
    overall = diagonal.sum() / total if total else math.nan
    chance = (mapped * referenced).sum() / total**2 if total else math.nan
    kappa = (overall - chance) / (1 - chance) if total and chance < 1 else math.nan
    present = np.isfinite(iou)
    return {
        "classes": list(names),
        "samples": int(total),
        "confusion_counts": counts.astype(np.int64).tolist(),
        "confusion_proportions": (counts / total if total else counts).tolist(),
        "overall_accuracy": _clean(overall),
        "kappa": _clean(kappa),
        "miou": _clean(iou[present].mean()) if present.any() else None,
        "per_class": {
            name: {
                "users_accuracy": _clean(users[k]),
                "producers_accuracy": _clean(producers[k]),
                "f1": _clean(f1[k]),
                "iou": _clean(iou[k]),
                "mapped": int(mapped[k]),
                "reference": int(referenced[k]),
            }
            for k, name in enumerate(names)
        },
    }


def _interval(estimate: float, variance: float) -> dict:
    se = math.sqrt(variance) if variance >= 0 and math.isfinite(variance) else math.nan
    return {
        "estimate": _clean(estimate),
        "se": _clean(se),
        "ci95": _clean(Z95 * se),
        "low": _clean(estimate - Z95 * se),
        "high": _clean(estimate + Z95 * se),
    }


def stratified_estimates(counts: np.ndarray, strata_area: Sequence[float], names: Sequence[str]) -> dict:
    """Area-weighted overall, user's and producer's accuracy and class areas with 95 % confidence intervals.

    ``counts[i, j]``: sample units mapped as class i (stratum i) and found to be class j in the reference;
    ``strata_area[i]``: the mapped area of class i (any unit; areas come out in that unit). Olofsson et al.
    2014, eqs. 2-10: p_ij = W_i n_ij / n_i., OA = sum p_jj, U_i = p_ii / p_i., P_j = p_jj / p_.j,
    A_j = A p_.j; a stratum with fewer than two samples has no variance (its terms count as undefined).
    """
    n = np.asarray(counts, dtype=np.float64)
    area = np.asarray(strata_area, dtype=np.float64)
    total_area = area.sum()
    weights = area / total_area
    n_row = n.sum(axis=1)
    share = _ratio(n, n_row[:, None])  # n_ij / n_i.
    share = np.nan_to_num(share)
    p = weights[:, None] * share
    p_col = p.sum(axis=0)
    diagonal = np.diag(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(n_row > 1, n_row - 1, np.nan)
    users = _ratio(diagonal, p.sum(axis=1))
    producers = _ratio(diagonal, p_col)
    overall = diagonal.sum()
    # eq. 5: V(OA) = sum_i W_i^2 U_i (1 - U_i) / (n_i. - 1)
    var_overall = np.nansum(np.where(n_row > 0, weights**2 * users * (1 - users) / dof, 0.0))
    # eq. 6: V(U_i) = U_i (1 - U_i) / (n_i. - 1)
    var_users = users * (1 - users) / dof
    # eq. 10: V(p_.k) = sum_i W_i^2 (n_ik / n_i.)(1 - n_ik / n_i.) / (n_i. - 1)
    var_share = weights[:, None] ** 2 * share * (1 - share) / dof[:, None]
    var_col = np.nansum(np.where(n_row[:, None] > 0, var_share, 0.0), axis=0)
    # eq. 7: producer's accuracy with the estimated reference totals N_.j = sum_i N_i. n_ij / n_i.
    mapped = area  # N_i. in area units (the equation is homogeneous in the unit)
    ref_total = (mapped[:, None] * share).sum(axis=0)
    var_producers = np.full(len(names), np.nan)
    for j in range(len(names)):
        if not ref_total[j] > 0 or not n_row[j] > 1:
            continue
        own = mapped[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (n_row[j] - 1)
        others = sum(
            mapped[i] ** 2 * share[i, j] * (1 - share[i, j]) / (n_row[i] - 1)
            for i in range(len(names))
            if i != j and n_row[i] > 1
        )
        var_producers[j] = (own + producers[j] ** 2 * others) / ref_total[j] ** 2
    return {
        "classes": list(names),
        "strata_area": area.tolist(),
        "strata_weights": weights.tolist(),
        "samples_per_stratum": n_row.astype(np.int64).tolist(),
        "area_proportions": p.tolist(),
        "overall_accuracy": _interval(overall, var_overall),
        "per_class": {
            name: {
                "users_accuracy": _interval(users[k], var_users[k]),
                "producers_accuracy": _interval(producers[k], var_producers[k]),
                "area": _interval(p_col[k] * total_area, var_col[k] * total_area**2),
                "mapped_area": float(area[k]),
            }
            for k, name in enumerate(names)
        },
    }
