"""Linear classifiers on frozen features: a softmax and a one-vs-rest linear SVM (paper Sec. 5.2-5.3).

Both minimise their objective exactly on standardised features (the softmax with SciPy's L-BFGS,
the SVM with the finite Newton method for L2-SVMs of Keerthi & DeCoste, JMLR 2005),
with the conventions of scikit-learn's ``LogisticRegression`` and ``LinearSVC`` so either is a
reference for the other:

- softmax: ``C * sum_i cross_entropy(softmax(W x_i + b), y_i) + ||W||^2 / 2``;
- SVM: for each class k, ``C * sum_i max(0, 1 - t_ik (w_k . x_i + b_k))^2 + ||w_k||^2 / 2``
  with ``t_ik = +1`` if ``y_i == k`` else ``-1`` (squared hinge, one-vs-rest).

The bias is not penalised. With more features than images (the usual case: thousands of values
per image, tens of images per class), the optimum's weights lie in the span of the training
features, so the problem is solved exactly in that ``N``-dimensional span (a QR factorisation of
the features) and mapped back. Features are standardised with the training set's mean and std, and
:meth:`LinearClassifier.folded` folds that back into one ``W x + b`` on the raw features, so a
trained head can become a Dense layer.
"""

import dataclasses

import numpy as np
from scipy import optimize

KINDS = ("softmax", "svm")


@dataclasses.dataclass
class LinearClassifier:
    """``scores(x) = ((x - mean) / scale) @ weights + bias``.

    Attributes: ``kind`` ("softmax" or "svm"), ``weights`` float32 ``[D, C]``, ``bias`` ``[C]``,
    ``mean`` and ``scale`` ``[D]`` (the standardisation), ``converged`` (L-BFGS's flag).
    """

    kind: str
    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    converged: bool = True

    def folded(self):
        """``(W [D, C], b [C])`` with ``scores(x) == x @ W + b`` on raw features."""
        weights = self.weights / self.scale[:, None]
        return weights.astype(np.float32), (self.bias - self.mean @ weights).astype(np.float32)

    def scores(self, features):
        """Class scores ``[N, C]`` (softmax logits, or SVM margins) of ``features [N, D]``."""
        return ((np.asarray(features, np.float32) - self.mean) / self.scale) @ self.weights + self.bias

    def predict(self, features):
        """int64 ``[N]`` predicted classes."""
        return np.argmax(self.scores(features), axis=1).astype(np.int64)


def fit_linear(features, labels, num_classes, kind="softmax", C=1.0, max_iter=2000):
    """Train a :class:`LinearClassifier` of ``kind`` on ``features [N, D]`` and int ``labels [N]``.

    ``C`` weighs the data term against the L2 penalty (larger C, weaker regularisation).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    x = np.asarray(features, np.float32)
    labels = np.asarray(labels, np.int64)
    if x.ndim != 2 or len(x) != len(labels) or not len(x):
        raise ValueError(f"features must be [N, D] with one label each, got {x.shape} and {labels.shape}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C!r}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0  # constant features (dead units) stay zero after centring
    x = (x - mean) / scale
    basis = None
    if x.shape[1] > x.shape[0]:
        # w = basis @ beta with ||w|| = ||beta||: the same objective over N instead of D unknowns.
        basis, r = np.linalg.qr(x.T)
        x = r.T
    # At most N x N values from here on: float64 keeps L-BFGS's line search exact near the optimum.
    x = np.ascontiguousarray(x, np.float64)
    dim = x.shape[1]
    onehot = np.eye(num_classes)[labels]
    if kind == "svm":
        solved = [_squared_hinge_newton(x, 2.0 * onehot[:, k] - 1.0, C) for k in range(num_classes)]
        weights = np.stack([w for w, _, _ in solved], axis=1).astype(np.float32)
        bias = np.asarray([b for _, b, _ in solved], np.float32)
        if basis is not None:
            weights = basis @ weights
        return LinearClassifier(kind, weights, bias, mean, scale, converged=all(ok for _, _, ok in solved))

    def objective(theta):
        weights = theta[: dim * num_classes].reshape(dim, num_classes)
        bias = theta[dim * num_classes :]
        data_loss, d_scores = _softmax_objective(x @ weights + bias, onehot)
        loss = C * data_loss + 0.5 * float(np.sum(weights**2))
        grad_w = C * (x.T @ d_scores) + weights
        grad_b = C * d_scores.sum(axis=0)
        return loss, np.concatenate([grad_w.ravel(), grad_b])

    theta = np.zeros(dim * num_classes + num_classes)
    result = optimize.minimize(objective, theta, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-6})
    weights = result.x[: dim * num_classes].reshape(dim, num_classes).astype(np.float32)
    if basis is not None:
        weights = basis @ weights
    bias = result.x[dim * num_classes :].astype(np.float32)
    return LinearClassifier(kind, weights, bias, mean, scale, converged=bool(result.success))


def _softmax_objective(scores, onehot):
    """Summed cross-entropy of softmax(scores) and its gradient w.r.t. the scores."""
    scores = scores - scores.max(axis=1, keepdims=True)
    log_probs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    return -float(np.sum(onehot * log_probs)), np.exp(log_probs) - onehot


def _squared_hinge_newton(x, targets, C, max_iter=100):
    """``(w [D], b, converged)`` minimising ``||w||^2 / 2 + C sum_i max(0, 1 - t_i (w . x_i + b))^2``.

    The objective is piecewise quadratic: each Newton step solves the quadratic of the current
    set of margin violators, followed by a backtracking line search, and ends when that set no
    longer changes the step (finite convergence).
    """
    x = np.asarray(x, np.float64)
    n, dim = x.shape
    z = np.hstack([x, np.ones((n, 1))])  # the bias as a last, unpenalised weight
    penalty = np.ones(dim + 1)
    penalty[-1] = 1e-12  # keeps the Newton system definite when every point is on its right side

    def objective(v):
        slack = np.maximum(0.0, 1.0 - targets * (z @ v))
        return 0.5 * float(np.sum(v[:-1] ** 2)) + C * float(np.sum(slack**2)), slack

    v = np.zeros(dim + 1)
    value, slack = objective(v)
    for _ in range(max_iter):
        active = slack > 0
        gradient = penalty * v - 2.0 * C * z[active].T @ (targets[active] * slack[active])
        hessian = np.diag(penalty) + 2.0 * C * z[active].T @ z[active]
        step = np.linalg.solve(hessian, gradient)
        decrease = float(gradient @ step)
        if decrease <= 1e-12 * max(1.0, abs(value)):
            return v[:-1], v[-1], True
        size = 1.0
        while True:
            new_value, new_slack = objective(v - size * step)
            if new_value <= value - 0.25 * size * decrease or size < 1e-10:
                break
            size *= 0.5
        v, value, slack = v - size * step, new_value, new_slack
    return v[:-1], v[-1], False
