"""The linear mode's head: logistic regression on frozen embeddings (softmax over the classes, or
one sigmoid per label), fitted with L-BFGS; its L2 penalty chosen by k-fold cross-validation on
the same embeddings, so no image is decoded twice.

Features come standardised (mean 0, deviation 1 per dimension): L-BFGS is then well
conditioned, and one penalty scale suits every backbone.
"""

import torch

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


class LogisticHead:
    """Weights (classes x features) and bias, fitted by rounds of L-BFGS."""

    def __init__(self, n_features, n_classes, task, l2, start=None, steps=LBFGS_STEPS):
        self.task, self.l2 = task, float(l2)
        w0, b0 = start if start is not None else (torch.zeros(n_classes, n_features), torch.zeros(n_classes))
        self.w = w0.detach().clone().requires_grad_(True)
        self.b = b0.detach().clone().requires_grad_(True)
        self.opt = torch.optim.LBFGS([self.w, self.b], lr=1, max_iter=steps, history_size=20,
                                     tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def step(self, z, y):
        """One round of L-BFGS iterations (`steps`) on (standardised features, targets)."""
        def closure():
            self.opt.zero_grad()
            loss = self.task.loss(z @ self.w.T + self.b, y) + 0.5 * self.l2 * (self.w * self.w).sum()
            loss.backward()
            return loss

        self.opt.step(closure)
        return self

    @torch.no_grad()
    def logits(self, z):
        return z @ self.w.T + self.b

    @property
    def solution(self):
        return self.w.detach(), self.b.detach()


def folds(y, k, seed, stratified):
    """`k` seeded folds of row indices; with `stratified`, each class is dealt round the folds."""
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(y), generator=g)
    if stratified:
        order = order[torch.argsort(y[order], stable=True)]  # classes in turn, shuffled within
    fold_of = torch.empty(len(y), dtype=torch.long)
    fold_of[order] = torch.arange(len(y)) % k
    return [torch.nonzero(fold_of == i).flatten() for i in range(k)]


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
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:CV_MAX_ROWS]
        z, y = z[keep], y[keep]
    splits = []
    for held in folds(y, k, seed, task.stratified_split):
        fit = torch.ones(len(y), dtype=torch.bool)
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
