"""train_mode='top': fine-tune the top of a pretrained network (its last block, last convolution
and norm, and the head) on activations of the frozen rest, computed once.

The head starts from the linear mode's fit on the same network (linear probing, then
fine-tuning: Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"), so the first
steps refine features the head already reads instead of undoing them; the batch norms keep their
pretrained statistics. The activations stay in memory (Lite0 at 224 px: 192 x 7 x 7 values a photo,
18 KB in bf16), so an epoch is a pass over a small network: on this 2-core CPU ~5 s for 3000
photos against ~4 minutes for an epoch of 'finetune'. Measured against 'linear' on four photo sets
(BENCHMARKS.md, issue 21): +2 to +5 points on three, a tie on cats and dogs, for about twice its time.

Bases: timm's EfficientNet layout (conv_stem, bn1, blocks, conv_head, bn2), which the default
EfficientNet_Lite0/1/2 and timm's efficientnet_* have.
"""

import math
import time

import torch

from pixql.errors import DataError, OptionError, TrainingError
from pixql.ml.data import eval_transform
from pixql.ml.embedding_cache import EmbeddingCache
from pixql.ml.fused_activations import frozen_layers
from pixql.ml.linear_head import fit_head
from pixql.ml.networks import linear_head
from pixql.ml.progress import progress_bar
from pixql.ml.runtime import autocast
from pixql.ml.train import BestEpoch, warmup_then_cosine
from pixql.tasks.classification import Tally

LEARNING_RATE = 1e-3  # AdamW's peak rate, after a warm-up over the first tenth of the steps
WARMUP = 0.1
WEIGHT_DECAY = 0.05
BATCH_SIZE = 32
# The starting head's features are standardised with deviations of at least this fraction of the
# mean (ml/linear_head.fit_head). On real photos that touches 0.1-0.6% of Lite0's features; on
# synthetic squares a near-constant feature got a weight of thousands and the first step of
# tuning sent the loss from 0.02 to 2900.
SCALE_FLOOR = 0.1
_LAYOUT = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")


def supports(model):
    return type(model).__name__ == "EfficientNet" and all(hasattr(model, a) for a in _LAYOUT) \
        and linear_head(model) is not None


def check(model, strategy):
    if not supports(model):
        raise TrainingError(f"train_mode='top' tunes the last block of an EfficientNet-family base "
                            f"(EfficientNet_Lite0/1/2, timm's efficientnet_*), not {type(model).__name__}; "
                            "use train_mode='finetune'")
    if strategy is not None and strategy.name != "local":
        raise OptionError("train_mode='top' runs in this process; leave out cluster and workers, or use "
                          "train_mode='finetune'", option="cluster")


def bottom(model, x):
    """The frozen part: everything before the last block."""
    x = model.bn1(model.conv_stem(x))
    for block in model.blocks[:-1]:
        x = block(x)
    return x


def top(model, a):
    """The tuned part up to the head's input (the pooled features linear mode reads)."""
    x = model.blocks[-1](a)
    return model.global_pool(model.bn2(model.conv_head(x)))


def _frozen(model):
    """Whether a state-dict name is of the frozen part (what `bottom` runs)."""
    last = len(model.blocks) - 1

    def frozen(name):
        parts = name.split(".")
        return parts[0] in ("conv_stem", "bn1") or (parts[0] == "blocks" and int(parts[1]) < last)
    return frozen


def _tuned(model):
    return [model.blocks[-1], model.conv_head, model.bn2, linear_head(model)]


def tune(run, lr, from_model=False):
    """Fill `run.history` (ml/train.py's _Run) and return the mode's options. `from_model`: the
    network is a trained model's (FIT MODEL), whose head is kept as it is rather than refitted."""
    cfg, model, device, task = run.config, run.model, run.device, run.task
    started = time.perf_counter()
    model.eval()
    transform = eval_transform(run.pre)
    store = torch.bfloat16 if run.precision in ("bf16", "fp16") else torch.float32

    # the frozen part's activations are kept in the embedding cache, under a key of their own
    # (its weights alone: a FIT MODEL of a 'top' model finds its BUILD's), in bf16 where computed so
    cache = EmbeddingCache.for_backbone(model, None, run.pre, run.precision, device, output="top_tune.bottom",
                                        names=_frozen(model)) if cfg.embedding_cache else None

    def activations(paths, targets, skipped, desc):
        a, rows = run.frozen_pass(bottom, paths, skipped, desc, transform, cache)
        return a.to(store), torch.tensor(targets, dtype=run.target_dtype)[rows]

    with frozen_layers(model, run.pre["input_size"]):  # for the frozen part's passes
        a, y = activations(run.paths, run.y, run.skipped, "activations (train)")
        if len(y) == 0:
            raise DataError("None of the training images could be read")
        val = activations(run.val_paths, run.val_y, run.val_skipped, "activations (validation)") \
            if run.val_paths else None
        if val is not None and not len(val[1]):
            val = None  # every validation image unreadable (on_error='skip')
    run.train_rows, run.val_rows = len(y), (len(val[1]) if val else 0)
    run.images_seen = run.train_rows + run.val_rows

    def features(x):
        with torch.no_grad(), autocast(device, run.precision):
            return torch.cat([top(model, x[i:i + 256].to(device)).float().cpu() for i in range(0, len(x), 256)])

    head = linear_head(model)
    wd = WEIGHT_DECAY if cfg.weight_decay is None else cfg.weight_decay
    options = {"cached_embeddings": run.cache_hits, "learning_rate": lr, "optimizer": "adamw", "weight_decay": wd,
               "augment": "none", "scheduler": "cosine", "warmup_epochs": WARMUP * cfg.epochs,
               "tuned": "last block, conv_head, bn2, head"}
    if not from_model:  # linear probing first: the head the fine-tuning starts from
        val_feats = (features(val[0]).numpy(), val[1].numpy()) if val else None
        w, b, _, probe = fit_head(features(a).numpy(), y.numpy(), val_feats, head.out_features, task,
                                  l2=cfg.l2, seed=cfg.seed, progress=False, scale_floor=SCALE_FLOOR)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(w).to(head.weight))
            head.bias.copy_(torch.from_numpy(b).to(head.bias))
        options.update(l2=probe["l2"], l2_cross_validation=probe["l2_cross_validation"])

    tuned = _tuned(model)
    params = [p for m in tuned for p in m.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    batch = cfg.batch_size or BATCH_SIZE
    options["batch_size"] = batch  # the epochs' (the activations' pass ran in inference batches)
    steps = cfg.epochs * math.ceil(len(y) / batch)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    scheduler = warmup_then_cosine(optimizer, max(1, round(WARMUP * steps)), steps)
    # fp16 needs its gradients scaled against underflow (as in 'finetune'); bf16 and fp32 do not
    scaler = torch.amp.GradScaler("cuda", enabled=run.precision == "fp16" and device.type == "cuda")
    generator = torch.Generator().manual_seed(cfg.seed)
    # the best validated epoch is kept, as in 'finetune' (without validation rows the last, or with
    # early_stopping the lowest training loss's)
    keeper = BestEpoch(run, lambda: [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in tuned],
                       lambda states: [m.load_state_dict(st) for m, st in zip(tuned, states)])
    prepared = time.perf_counter() - started
    try:
        for epoch in range(1, cfg.epochs + 1):
            t = time.perf_counter()
            tally = Tally(task)
            with progress_bar(len(y), f"epoch {epoch}/{cfg.epochs} (top)", cfg.progress, leave=True) as bar:
                for idx in torch.randperm(len(y), generator=generator).split(batch):
                    with autocast(device, run.precision):
                        logits = head(top(model, a[idx].to(device))).float()
                    target = y[idx].to(device)
                    loss = task.loss(logits, target)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    tally.add(logits.detach(), target, loss.item())
                    bar.update(len(idx))
                    bar.set_postfix(loss=f"{tally.loss:.4f}", **tally.postfix())
                v_tally = None
                if val:
                    with torch.no_grad():
                        v_tally = Tally(task).add(head(features(val[0]).to(device)).float().cpu(), val[1])
            if not math.isfinite(tally.loss):
                raise TrainingError(f"training diverged at epoch {epoch} (the loss is {tally.loss}); lower "
                                    f"learning_rate (it was {lr:g}) and build again; no model was saved")
            images = len(y) + (run.val_rows if epoch == 1 else 0)
            run._record(epoch, tally.loss, tally.accuracy, v_tally.loss if val else None,
                        v_tally.accuracy if val else None,
                        time.perf_counter() - t + (prepared if epoch == 1 else 0.0), images, tally, v_tally)
            run.images_seen += len(y)
            if keeper.after(epoch, tally, v_tally):
                break
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    keeper.restore(run.history[-1]["epoch"])
    return options
