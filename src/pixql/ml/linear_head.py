"""The linear mode's head: logistic regression on frozen embeddings (softmax over the classes, or
one sigmoid per label), fitted with L-BFGS (scipy's L-BFGS-B); its L2 penalty chosen by k-fold
cross-validation on the same embeddings, so no image is decoded twice.

Features come standardised (mean 0, deviation 1 per dimension): L-BFGS is then well
conditioned, and one penalty scale suits every backbone.

numpy and scipy only, no torch: a linear BUILD whose embeddings are all cached fits its head
without importing torch (ml/cached_linear.py), and ml/train.py fits it the same way.
"""

import contextlib
import functools
import os
import threading
import time

import numpy as np

from pixql.ml.progress import progress_bar
from pixql.ml.trained import history_entry
from pixql.tasks.classification import Tally

# Iterations of L-BFGS per linear-mode epoch: enough for a logistic head to converge.
LBFGS_STEPS = 100
# The L2 penalties tried, as multiples of 1/n (scikit-learn's C is 1/multiple), strong to weak:
# each fit starts from the previous one's solution. On the four photo sets of ../shared the
# winners were 30-1000 (measured from 3000 down to 1; BENCHMARKS.md).
L2_GRID = (1000.0, 300.0, 100.0, 30.0, 10.0)
CV_FOLDS = 3
# L-BFGS iterations per cross-validation fit: warm-started, the ranking of the penalties is
# settled well before full convergence (the final head gets LBFGS_STEPS per epoch).
CV_STEPS = 30
# Cross-validation fits on at most this many rows (a seeded sample): the choice of penalty
# settles long before, and large tables would pay for it in every fold.
CV_MAX_ROWS = 8000
# Below this many rows a fold says little; the weakest penalty that won on real photos is used.
CV_MIN_ROWS = 30
DEFAULT_MULTIPLE = 30.0
# Below this many rows no feature's deviation is taken below SMALL_FLOOR times the features'
# root-mean-square deviation (fit_head). Measured on cats and dogs, flowers5 and clothing, 1-10
# photos per class, 4 seeded draws each (bench/few_photos.py; BENCHMARKS.md, "Few photos"): 22%
# fewer wrong answers than each feature's own deviation, and far fewer near-certain wrong ones
# (the true label's mean log-likelihood -0.25 to -1.96 per draw, against down to -12.6).
# A floor of 1.0 did as well (0.3: 7299 wrong, 1.0: 7429, none: 9389). From SMALL_ROWS rows on
# the floor falls as 1/rows (small_floor): cut off at 30 rows, 6 flowers per class had 41 of 448
# test photos over 0.999, 27 of them wrong (a QA pass; BENCHMARKS.md, "Few photos").
SMALL_ROWS = 30
SMALL_FLOOR = 0.3
# L-BFGS-B's stopping tolerances (on the relative fall of the loss, and the largest gradient).
# The loss is float32 (~4e-9 apart at 0.05): below ~1e-8 line searches failed on its noise.
FTOL, GTOL = 1e-8, 1e-7


class LogisticHead:
    """Weights (classes x features) and bias, fitted by rounds of L-BFGS. The loss and its
    gradient come from the task (`head_loss`), in float32; scipy keeps its iterate in float64."""

    def __init__(self, n_features, n_classes, task, l2, start=None, steps=LBFGS_STEPS):
        self.task, self.l2, self.steps = task, float(l2), steps
        self.shape = (n_classes, n_features)
        w0, b0 = start if start is not None else (np.zeros(self.shape), np.zeros(n_classes))
        self.x = np.concatenate([np.asarray(w0, np.float64).ravel(), np.asarray(b0, np.float64)])

    def _split(self, x):
        c, d = self.shape
        return x[:c * d].reshape(c, d), x[c * d:]

    def step(self, z, y):
        """One round of L-BFGS iterations (`steps`) on (standardised float32 features, targets)."""
        from scipy.optimize import minimize

        def objective(x):
            w64, b64 = self._split(x)
            w, b = w64.astype(np.float32), b64.astype(np.float32)
            loss, grad = self.task.head_loss(z @ w.T + b, y)
            gw = grad.T @ z + np.float32(self.l2) * w
            value = loss + 0.5 * self.l2 * float(np.dot(x[:w.size], x[:w.size]))
            return value, np.concatenate([gw.ravel(), grad.sum(0)]).astype(np.float64)

        # Evaluations capped at 1.25x the iterations, as torch's LBFGS did before; 10 corrections
        # (scipy's default) fitted fashion div_n's 103-class head 20% faster than 20, to the same loss.
        with _one_thread(_lbfgs_blas()):
            result = minimize(objective, self.x, jac=True, method="L-BFGS-B",
                              options={"maxiter": self.steps, "maxfun": self.steps * 5 // 4, "maxcor": 10,
                                       "gtol": GTOL, "ftol": FTOL})
        self.x = result.x
        return self

    def logits(self, z):
        w, b = self.solution
        return z @ w.T + b

    @property
    def solution(self):
        w, b = self._split(self.x)
        return w.astype(np.float32), b.astype(np.float32)


@functools.cache
def _lbfgs_blas():
    """The BLAS libraries that L-BFGS-B's own vector arithmetic runs on: scipy's, where (as in
    pip's wheels) it has its own apart from numpy's; else the one both share. Left with their
    threads, its many small operations on a 100k-long vector spent longer waking them than
    computing (fashion div_n's 103-class head: 16 s of cross-validation against 5 s)."""
    import scipy.optimize  # noqa: F401  (loads scipy's BLAS)
    from threadpoolctl import ThreadpoolController

    blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    own = [lib for lib in blas if os.path.basename(os.path.dirname(lib.filepath)).startswith("scipy")]
    return own or blas


_threads_lock = threading.Lock()
_threads_users = [0, None]  # fits running now; the thread counts to restore after the last


@contextlib.contextmanager
def _one_thread(libraries):
    """Counted, so that fits in two threads of one process restore the counts of before both."""
    with _threads_lock:
        if _threads_users[0] == 0:
            _threads_users[1] = [lib.num_threads for lib in libraries]
            for lib in libraries:
                lib.set_num_threads(1)
        _threads_users[0] += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users[0] -= 1
            if _threads_users[0] == 0:
                for lib, n in zip(libraries, _threads_users[1]):
                    lib.set_num_threads(n)


def folds(y, k, seed, stratified):
    """`k` seeded folds of row indices; with `stratified`, each class is dealt round the folds."""
    y = np.asarray(y)
    order = np.random.default_rng(int(seed)).permutation(len(y))
    if stratified:
        order = order[np.argsort(y[order], kind="stable")]  # classes in turn, shuffled within
    fold_of = np.empty(len(y), dtype=np.int64)
    fold_of[order] = np.arange(len(y)) % k
    return [np.flatnonzero(fold_of == i) for i in range(k)]


def choose_l2(z, y, n_classes, task, seed=0, grid=L2_GRID, k=CV_FOLDS):
    """The penalty (a multiple of 1/n) with the lowest cross-validated loss, and every tried
    one's [multiple, task metric, loss], strong to weak. The loss, not the accuracy: on a few
    hundred rows the accuracy moves by single rows and picks at random among near ties; the loss
    is smooth (on the photo sets both chose penalties within 1 point of test accuracy of each other).

    The search starts at the grid's middle and walks towards the lower loss until it rises (the
    CV loss over the penalty had one minimum on every photo set measured): 3 or 4 of the 5
    penalties are fitted instead of all, each fold warm-started from its neighbour's solution."""
    n = len(y)
    if n < CV_MIN_ROWS:
        return DEFAULT_MULTIPLE, []
    if n > CV_MAX_ROWS:
        keep = np.random.default_rng(int(seed)).permutation(n)[:CV_MAX_ROWS]
        z, y = z[keep], y[keep]
    splits = []
    for held in folds(y, k, seed, task.stratified_split):
        fit = np.ones(len(y), dtype=bool)
        fit[held] = False
        splits.append((z[fit], y[fit], z[held], y[held]))
    solutions, scores = {}, {}  # (grid index, fold) -> head's solution; grid index -> its row

    def score(i, start_from=None):
        tally = Tally(task)
        for f, (zf, yf, zh, yh) in enumerate(splits):
            start = solutions.get((start_from, f))
            head = LogisticHead(z.shape[1], n_classes, task, grid[i] / len(yf), start, CV_STEPS).step(zf, yf)
            solutions[i, f] = head.solution
            tally.add(head.logits(zh), yh)
        scores[i] = [grid[i], getattr(tally, task.metric), tally.loss]
        return tally.loss

    middle = len(grid) // 2
    score(middle)
    for step in (1, -1):  # weaker first (the grid runs strong to weak), then stronger
        i = middle
        while 0 <= i + step < len(grid) and score(i + step, i) < scores[i][2]:
            i += step
        if i != middle:
            break  # the loss fell one way and rose after: the other way lies uphill
    tried = [scores[i] for i in sorted(scores)]
    best = min(tried, key=lambda row: row[2])
    return best[0], tried


def small_floor(rows):
    """The share of the features' root-mean-square deviation below which no feature's deviation is
    taken, in a fit on `rows` rows: SMALL_FLOOR up to SMALL_ROWS, then falling as 1/rows (0.009
    at 1000 rows), so that no size of table crosses a cliff."""
    return SMALL_FLOOR * min(1.0, SMALL_ROWS / max(int(rows), 1))


def fit_head(feats, y, val, n_classes, task, *, l2=None, epochs=1, seed=0, progress=True,
             seconds_before=0.0, images_before=0, scale_floor=0.0):
    """The linear mode's fit on embeddings `feats` [n, d] with targets `y` (class indices, or a
    [n, classes] 0/1 matrix for multi-label), `val` (features, targets) or None.

    Returns (weight [classes, d] and bias that read raw embeddings, history, options): an
    epoch is one round of L-BFGS, and the rounds stop early once the loss no longer moves.
    `seconds_before` / `images_before`: what computing the embeddings took, counted in the
    first epoch's line of the history. `scale_floor`: no feature's deviation is taken below this
    fraction of their mean deviation (a head for fine-tuning: a nearly constant feature would
    otherwise get a weight so large that the first update of the features it reads blows up)."""
    started = time.perf_counter()
    if val is not None and not len(val[1]):
        val = None  # every validation image unreadable (on_error='skip'): nothing to score
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    # Standardised features make L-BFGS well conditioned; the scaling is folded back into the
    # weights afterwards so the head reads raw embeddings.
    mu = feats.mean(0)
    sigma = feats.std(0, ddof=1) if len(feats) > 1 else np.ones_like(mu)
    # A handful of rows says little of each feature's spread: one that barely varied among them
    # was scaled up for every new photo, whose answers then came out at 0 or 1 (two photos: 169 of
    # 200 scores over 0.999, 91 of them wrong)
    sigma = np.maximum(sigma, small_floor(len(feats)) * (float(np.sqrt(np.mean(sigma ** 2))) or 1.0))
    sigma = np.maximum(sigma, max(1e-6, scale_floor * float(sigma.mean())))
    z = (feats - mu) / sigma
    if l2 is not None:
        cv = None
    else:  # the penalty that cross-validates best on these embeddings
        multiple, cv = choose_l2(z, y, n_classes, task, seed)
        l2 = multiple / len(y)
    fit = LogisticHead(z.shape[1], n_classes, task, l2)
    val_z = (np.asarray(val[0], np.float32) - mu) / sigma if val else None

    seconds_before += time.perf_counter() - started  # the penalty's search counts in the first epoch
    history = []
    with progress_bar(epochs, "linear head", progress, unit="epoch", leave=True) as bar:
        for epoch in range(1, epochs + 1):
            t = time.perf_counter()
            fit.step(z, y)
            tally = Tally(task).add(fit.logits(z), y)
            if history and abs(tally.loss - history[-1]["train_loss"]) <= 1e-7 * max(1.0, tally.loss):
                break  # L-BFGS has converged: more epochs would repeat the same point
            v_tally = Tally(task).add(fit.logits(val_z), val[1]) if val else None
            seconds = time.perf_counter() - t + (seconds_before if epoch == 1 else 0.0)
            images = len(y) + (images_before if epoch == 1 else 0)
            history.append(history_entry(task, epoch, tally.loss, tally.accuracy,
                                         v_tally.loss if val else None, v_tally.accuracy if val else None,
                                         seconds, images, tally, v_tally))
            bar.set_postfix(loss=f"{tally.loss:.4f}", **tally.postfix(), **(v_tally.postfix("val_") if val else {}))
            bar.update(1)
    w, b = fit.solution
    options = {"head_solver": "lbfgs", "l2": l2, "l2_cross_validation": cv, "learning_rate": None,
               "optimizer": None, "augment": "none"}
    return w / sigma, b - (w / sigma) @ mu, history, options
