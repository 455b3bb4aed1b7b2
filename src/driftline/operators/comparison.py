"""Version comparison: is a challenger model better or worse than the champion, and when is it sure?

The inputs are per-event **losses** (lower is better): 0/1 errors for a classifier (accuracy
``= 1 - mean loss``), absolute errors for a regressor (MAE ``= mean loss``).

- **Shadow** (``paired=True``): both versions score the same requests, so the losses pair up and
  the test runs on the per-request differences ``champion - challenger`` (the request's own
  difficulty cancels).
- **Canary** (``paired=False``): traffic is split, the two loss streams are independent samples.

Per window, :func:`compare_window` gives the difference of mean losses (``champion -
challenger``: positive means the challenger is better) with a normal confidence interval (paired
or Welch). Across windows, :class:`SequentialComparison` accumulates the evidence and decides
once, at a controlled error rate however often it is looked at: a mixture sequential probability
ratio test (mSPRT, Robbins 1970; Johari et al., "Always valid inference", 2017). With ``D`` the
difference of means and ``V`` its variance (plug-in sample variances), the normal-mixture
likelihood ratio against "no difference" is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 D^2 / (2 V (V + tau^2)))

with ``tau`` (``effect``) the size of difference worth detecting; by Ville's inequality the
probability that ``Lambda`` ever reaches ``1 / alpha`` without a difference is at most ``alpha``
(exact for Gaussian increments with known variance; the plug-in variance is why nothing is decided
before ``min_events`` per arm). The decision is ``"challenger_better"`` or ``"challenger_worse"``
by the sign of ``D``; the always-valid p-value is ``min(1, 1 / max Lambda)``.

>>> import numpy as np
>>> rng = np.random.default_rng(8)
>>> test = SequentialComparison(paired=True)
>>> for window in range(20):
...     champion = rng.random(1_000) < 0.10                  # 10 % errors
...     challenger = rng.random(1_000) < 0.08                # 8 % errors, same requests
...     decision = test.update(champion, challenger)
...     if decision:
...         break
>>> decision, window < 20
('challenger_better', True)
>>> quiet = SequentialComparison(paired=False)
>>> [quiet.update(rng.random(1_000) < 0.1, rng.random(1_000) < 0.1) for _ in range(5)]
[None, None, None, None, None]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Decision = Literal["challenger_better", "challenger_worse"]


@dataclass(frozen=True)
class WindowComparison:
    """One window's champion/challenger difference."""

    n_champion: int
    n_challenger: int
    champion_loss: float
    """Mean loss of the champion (error rate or MAE)."""
    challenger_loss: float
    difference: float
    """``champion_loss - challenger_loss``: positive means the challenger is better."""
    low: float
    """Lower end of the confidence interval of :attr:`difference`."""
    high: float


def _losses(values: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[~np.isnan(x)]


def compare_window(champion: Any, challenger: Any, *, paired: bool,
                   z: float = 1.96) -> WindowComparison:
    """Difference of mean losses with a ``z`` normal interval (paired: per-request differences,
    NaN in either dropping the pair; unpaired: Welch).

    >>> compare_window([1, 0, 1, 0], [0, 0, 1, 0], paired=True).difference
    0.25
    """
    if paired:
        a = np.asarray(champion, dtype=np.float64).ravel()
        b = np.asarray(challenger, dtype=np.float64).ravel()
        if a.shape != b.shape:
            raise ValueError("paired losses need one champion and one challenger loss per request")
        keep = ~(np.isnan(a) | np.isnan(b))
        a, b = a[keep], b[keep]
        d = a - b
        var = float(d.var(ddof=1)) / d.size if d.size > 1 else math.nan
    else:
        a, b = _losses(champion), _losses(challenger)
        var = (float(a.var(ddof=1)) / a.size + float(b.var(ddof=1)) / b.size
               if a.size > 1 and b.size > 1 else math.nan)
    ma = float(a.mean()) if a.size else math.nan
    mb = float(b.mean()) if b.size else math.nan
    diff = ma - mb
    half = z * math.sqrt(var) if not math.isnan(var) else math.nan
    return WindowComparison(n_champion=int(a.size), n_challenger=int(b.size), champion_loss=ma,
                            challenger_loss=mb, difference=diff, low=diff - half, high=diff + half)


class _Moments:
    """Count, sum and sum of squares of a stream (enough for a mean and variance)."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.squares = 0.0

    def add(self, x: np.ndarray[Any, np.dtype[np.float64]]) -> None:
        self.n += int(x.size)
        self.total += float(x.sum())
        self.squares += float(np.dot(x, x))

    @property
    def mean(self) -> float:
        return self.total / self.n

    @property
    def variance(self) -> float:
        return max((self.squares - self.total**2 / self.n) / (self.n - 1), 0.0)


class SequentialComparison:
    """Always-valid test of champion vs challenger losses, fed window by window.

    ``effect``: the difference of mean losses worth detecting (the mixture's sd ``tau``; 0.02 =
    two points of accuracy); ``alpha``: the probability of ever deciding without a difference;
    ``min_events``: events per arm before any decision. After a decision the test stops (call
    :meth:`reset` to start over, e.g. after a promotion).
    """

    def __init__(self, *, paired: bool, effect: float = 0.02, alpha: float = 0.01,
                 min_events: int = 500) -> None:
        if effect <= 0 or not 0 < alpha < 1:
            raise ValueError("effect must be > 0 and alpha in (0, 1)")
        self.paired = paired
        self.effect = effect
        self.alpha = alpha
        self.min_events = min_events
        self.reset()

    def reset(self) -> None:
        """Forget all evidence."""
        self._a = _Moments()  # champion (unpaired) or the differences (paired)
        self._b = _Moments()
        self.decision: Decision | None = None
        self.max_ratio = 1.0

    def update(self, champion: Any, challenger: Any) -> Decision | None:
        """Add a window's losses; the decision if it is reached now (None otherwise, and after
        one was reached earlier: see :attr:`decision`)."""
        if self.decision is not None:
            return None
        if self.paired:
            a = np.asarray(champion, dtype=np.float64).ravel()
            b = np.asarray(challenger, dtype=np.float64).ravel()
            if a.shape != b.shape:
                raise ValueError("paired losses need one champion and one challenger loss per request")
            keep = ~(np.isnan(a) | np.isnan(b))
            self._a.add(a[keep] - b[keep])
        else:
            self._a.add(_losses(champion))
            self._b.add(_losses(challenger))
        ratio = self.likelihood_ratio
        self.max_ratio = max(self.max_ratio, ratio)
        if ratio >= 1.0 / self.alpha:
            self.decision = "challenger_better" if self.difference > 0 else "challenger_worse"
            return self.decision
        return None

    @property
    def n(self) -> int:
        """Events counted per arm (the smaller arm when unpaired)."""
        return self._a.n if self.paired else min(self._a.n, self._b.n)

    @property
    def difference(self) -> float:
        """``champion - challenger`` mean loss so far."""
        if self.n == 0:
            return math.nan
        return self._a.mean if self.paired else self._a.mean - self._b.mean

    def _variance(self) -> float:
        if self.paired:
            return self._a.variance / self._a.n
        return self._a.variance / self._a.n + self._b.variance / self._b.n

    @property
    def likelihood_ratio(self) -> float:
        """The mixture likelihood ratio now (1 before ``min_events`` per arm)."""
        if self.n < max(self.min_events, 2):
            return 1.0
        v = self._variance()
        if v <= 0:  # identical losses so far: no evidence either way
            return 1.0 if self.difference == 0 else math.inf
        t2 = self.effect**2
        exponent = t2 * self.difference**2 / (2.0 * v * (v + t2))
        return math.sqrt(v / (v + t2)) * math.exp(min(exponent, 700.0))

    @property
    def p_value(self) -> float:
        """Always-valid p-value of "no difference": ``min(1, 1 / max ratio so far)``."""
        return min(1.0, 1.0 / self.max_ratio)
