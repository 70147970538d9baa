"""Training a classifier on (image path, label) rows.

Three ways, chosen by `train_mode`:
- 'linear': the pretrained backbone stays frozen; its embeddings are computed once (through the
  embedding cache) and a logistic-regression head is fitted on them (ml/linear_head.py: L-BFGS,
  cross-validated L2). Cheap on a CPU; a later BUILD from cached embeddings runs without torch
  (ml/cached_linear.py).
- 'top': the frozen part runs once and the last block and head are tuned on its activations
  (ml/top_tune.py).
- 'finetune': the network is trained with AdamW (or SGD/RMSprop), cosine schedule, light
  augmentation; bf16 autocast where the device has it natively, channels_last on a CPU; a
  pretrained base's stem and first stages (up to stride 4) keep their weights (frozen_stages).
Either way the result is a whole network (backbone + head in timm's classifier slot), so
inference needs no special case.
"""

import copy
import dataclasses
import math
import os
import random
import time

import numpy as np
import torch

from pixql.errors import CatalogError, DataError, OptionError, StoreError, TrainingError
from pixql.ml.bases import create_backbone, resolve_base
from pixql.ml.batchnorm_folding import Folding
from pixql.ml.depthwise_grads import fp32_weight_grads
from pixql.ml.data import (ImageRows, auto_workers, batches, draft_size, eval_transform, make_loader,
                           train_transform)
from pixql.ml.embed import pre_logits
from pixql.ml.linear_head import fit_head
from pixql.ml.embedding_cache import EmbeddingCache, cached_forward, file_digest, kept_features, kept_rows
from pixql.ml.fused_activations import frozen_layers
from pixql.ml.networks import create_network, freeze_stages, linear_head, stages, stages_up_to_stride
from pixql.ml.runtime import (BatchSplitter, auto_batch_size, autocast, forward_rows, progress_bar, resolve_device,
                              resolve_precision, to_device, to_input)
from pixql.ml.trained import (FROZEN_STRIDE, TrainConfig, TrainedModel, auto_mode, check_options, history_entry,
                              lr_hint, mode_epochs, refused_options, run_metrics, training_rows, used_options)
from pixql.tasks import task_of
from pixql.tasks.classification import Tally


def train_classifier(paths, labels, config=None, val_paths=None, val_labels=None, *, init=None):
    """Train a classifier on `paths` labelled `labels`.

    `init` (network, state_dict, classes, preprocessing as a dict) continues training an
    existing model (FIT MODEL) instead of starting from a base model.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    check_options(config)
    rows = training_rows(paths, labels, config, val_paths, val_labels, None if init is None else init["classes"])
    paths, labels, val_paths, val_labels = rows.paths, rows.labels, rows.val_paths, rows.val_labels
    task, classes, y, val_y = rows.task, rows.classes, rows.y, rows.val_y

    _seed_everything(config.seed)
    device = resolve_device(config.device)
    resolve_precision(config.precision, device)  # a bad value fails before any work
    spec = resolve_base(config.base) if init is None else _spec_of(config.base, init)
    if init is not None:
        model = create_network(init["network"])
        try:
            model.load_state_dict(init["state_dict"])
        except RuntimeError as e:
            raise StoreError(f"The saved weights do not fit its {init['network']['arch']} network: {e}") from e
        network, preprocessing, weights_source = dict(init["network"]), dict(init["preprocessing"]), "model"
        pretrained_backbone = True
    else:
        model, network, preprocessing, weights_source = create_backbone(
            spec.name, len(classes), config.pretrained, config.weights, config.image_size)
        pretrained_backbone = weights_source != "random"
        if pretrained_backbone and linear_head(model) is not None:
            # Some timm inits (EfficientNet's) give a fresh head large weights, whose first
            # updates then disturb the pretrained backbone: start the new head at zero.
            torch.nn.init.zeros_(linear_head(model).weight)
            torch.nn.init.zeros_(linear_head(model).bias)

    from pixql.ml.strategy import Local

    strategy = config.strategy or Local()
    mode = _choose_mode(config, model, pretrained_backbone, device, len(paths))
    config = dataclasses.replace(config, epochs=mode_epochs(config, mode, continuing=init is not None))
    precision = resolve_precision(config.precision, device)
    batch_size = int(config.batch_size or auto_batch_size(device, training=mode == "finetune"))
    opts = used_options(config, task, mode=mode, device=device, precision=precision, batch_size=batch_size,
                        num_workers=auto_workers(len(paths), config.num_workers, device.type),
                        pretrained=pretrained_backbone, weights_source=weights_source,
                        image_size=preprocessing["input_size"][-1], strategy=strategy.name, workers=strategy.workers)
    run = _Run(model, paths, y, val_paths, val_y, preprocessing, config, device, precision, batch_size,
               pretrained_backbone, task)
    run.prior_rows = (init or {}).get("rows")
    if mode == "finetune":  # a bad count fails before any work
        run.frozen_stages = _frozen_stages(config, model, pretrained_backbone, network["arch"])
    if mode == "linear":  # the embeddings where the strategy computes them; the head here
        run.forward = strategy.forward or forward_rows
        opts.update(run.linear())
        if init is not None:
            kept = run.prior_rows is not None
            opts.update(previous_rows=run.prior_used if kept else None, previous_rows_not_cached=run.prior_missing,
                        previous_rows_from=run.prior_source, previous_rows_validating=run.prior_held,
                        classes_without_rows=[classes[i] for i in run.empty_classes])
    elif mode == "top":
        from pixql.ml import top_tune

        opts.update(top_tune.tune(run, config.learning_rate or top_tune.LEARNING_RATE, from_model=init is not None))
    else:
        opts.update(strategy.finetune(run, config.learning_rate or _default_lr(spec, pretrained_backbone)))

    seconds = time.perf_counter() - started
    metrics = run_metrics(run.history, task, run.val_rows, run.saved_epoch)
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in run.model.state_dict().items()}
    broken = nonfinite_tensors(state_dict)
    if broken:  # never save a model whose every answer would be NaN
        raise TrainingError(f"training diverged: {len(broken)} weight tensor(s) hold NaN or infinite values "
                            f"(e.g. {broken[0]}); lower learning_rate{lr_hint(config)} and build again; "
                            "no model was saved")
    if mode == "linear" and init is None and config.strategy is None and run.cache_key:
        _remember_shortcut(config, run, spec.name, state_dict, device=device, precision=precision,
                           batch_size=batch_size, weights_source=weights_source, network=network,
                           preprocessing=preprocessing)
    return TrainedModel(
        network=network,
        state_dict=state_dict,
        classes=classes,
        preprocessing=preprocessing,
        history=run.history,
        metrics=metrics,
        train_mode=mode,
        base=spec.name,
        train_rows=run.train_rows,
        val_rows=run.val_rows,
        epochs=len(run.history),
        seconds=seconds,
        images_per_second=run.images_seen / seconds if seconds > 0 else 0.0,
        options=opts,
        skipped=sorted({paths[i] for i in run.skipped} | {val_paths[i] for i in run.val_skipped}),
        task=task.name,
        rows=run.rows,
    )


def _remember_shortcut(config, run, base, state_dict, **resolved):
    """What a later linear BUILD of this base needs to run without torch when every embedding
    is cached (ml/cached_linear.py)."""
    from pixql.ml import top_tune
    from pixql.ml.cached_linear import remember

    head = linear_head(run.model)
    names = {id(v): k for k, v in run.model.state_dict(keep_vars=True).items()}
    if head.bias is not None:
        remember(config, base=base, embedding_cache=run.cache_key, state_dict=state_dict,
                 head=(names[id(head.weight)], names[id(head.bias)]), top=top_tune.supports(run.model), **resolved)


def continue_training(manifest, state_dict, paths, labels, config=None, val_paths=None, val_labels=None,
                      rows=None):
    """Train a saved model further on more rows (FIT MODEL): same network, classes and
    preprocessing; by default in the mode it was trained with. `rows`: the saved model's own
    training rows (a linear head is refitted on them and the new ones together)."""
    config = copy.copy(config or TrainConfig())
    if config.train_mode == "auto" and manifest.get("train_mode") in ("linear", "finetune", "top"):
        config.train_mode = manifest["train_mode"]
        refused = refused_options(config.train_mode, config.given, continuing=True)
        if refused is not None:
            raise refused
    if config.frozen_stages is None:
        # the stages the model's own fine-tuning kept (a model from before the option, or from
        # random weights, trained them all): FIT does not freeze what BUILD trained
        config.frozen_stages = ((manifest.get("options") or {}).get("used") or {}).get("frozen_stages") or 0
    config.task = task_of(manifest)
    init = {k: manifest[k] for k in ("network", "classes", "preprocessing")}
    init["state_dict"] = state_dict
    init["rows"] = rows
    config.base = config.base or manifest.get("base")
    return train_classifier(paths, labels, config, val_paths, val_labels, init=init)


# --- checks and choices ---------------------------------------------------------------------

def _choose_mode(config, model, pretrained_backbone, device, n_train):
    mode = config.train_mode
    augmenting = config.augment not in (None, "none")
    if mode == "linear":
        if linear_head(model) is None:
            raise TrainingError("train_mode='linear' needs a network whose head is one linear layer; "
                                "use train_mode='finetune'")
        if not pretrained_backbone:  # a head on random features: far below what fine-tuning gets
            raise OptionError("train_mode='linear' fits a head on a pretrained network's features; the base has no "
                              "pretrained weights here (SimpleCNN, or pretrained=false), so they would be random: "
                              "use train_mode='finetune'", option="train_mode")
        if augmenting:
            raise OptionError("augment needs train_mode='finetune': a linear head is fitted on "
                              "embeddings computed once", option="augment")
        return mode
    if mode == "top":
        from pixql.ml import top_tune

        top_tune.check(model, config.strategy)
        if not pretrained_backbone:
            raise OptionError("train_mode='top' tunes the top of a pretrained network; the base has no "
                              "pretrained weights here (pretrained=false?): use train_mode='finetune'",
                              option="train_mode")
        if augmenting:
            raise OptionError("augment needs train_mode='finetune': 'top' trains on activations computed once",
                              option="augment")
        return mode
    if mode == "finetune":
        return mode
    from pixql.ml import top_tune

    return auto_mode(config, device_type=device.type, n_train=n_train, pretrained=pretrained_backbone,
                     linear=linear_head(model) is not None, top=top_tune.supports(model))


def _spec_of(base, init):
    from pixql.ml.bases import BaseSpec

    if base:
        try:
            return resolve_base(base)
        except CatalogError:
            pass
    arch = init["network"]["arch"]
    return BaseSpec(arch, arch, 1e-4, int(init["preprocessing"]["input_size"][-1]), "none")


def _frozen_stages(config, model, pretrained_backbone, arch):
    """How many of the first stages fine-tuning keeps pretrained (ml/networks.freeze_stages)."""
    count, available = config.frozen_stages, len(stages(model))
    if count is None:
        return stages_up_to_stride(model, FROZEN_STRIDE) if pretrained_backbone else 0
    if count and not pretrained_backbone:
        raise OptionError(f"frozen_stages={count} keeps pretrained weights, and this {arch} network starts from "
                          "random ones (pretrained=false): leave frozen_stages out or set it to 0",
                          option="frozen_stages")
    if count and not available:
        raise OptionError(f"frozen_stages={count}: {arch} has no feature stages (timm's feature_info) to freeze; "
                          "leave frozen_stages out", option="frozen_stages")
    if count and count >= available:
        raise OptionError(f"frozen_stages={count} would freeze every stage of {arch}, which has {available}: at most "
                          f"{available - 1}, or train_mode='top' or 'linear', which train less", option="frozen_stages")
    return count


def _default_lr(spec, pretrained_backbone):
    # From random weights a larger step is needed than when adjusting pretrained ones.
    return spec.default_lr if pretrained_backbone else max(spec.default_lr, 1e-3)


def _seed_everything(seed):
    # timm's random crops draw from Python's `random`; torch's from torch's generator.
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- the two training procedures -----------------------------------------------------------------

class _Run:
    """State of one training run; `linear()` / `finetune()` fill `history` and return options."""

    def __init__(self, model, paths, y, val_paths, val_y, pre, config, device, precision, batch_size,
                 pretrained_backbone, task):
        self.model = to_device(model, device)
        self.task = task
        self.target_dtype = torch.float32 if task.target_dtype == "float" else torch.long
        self.pretrained_backbone = pretrained_backbone
        self.paths, self.y, self.val_paths, self.val_y = paths, y, val_paths, val_y
        self.pre, self.config = pre, config
        self.device, self.precision, self.batch_size = device, precision, batch_size
        self.history = []
        self.skipped, self.val_skipped = set(), set()
        self.images_seen = 0
        self.train_rows, self.val_rows = len(paths), len(val_paths)
        self.forward = forward_rows  # linear mode's no-grad pass (a strategy may run it elsewhere)
        self.saved_epoch = None  # finetune: the epoch whose weights are kept (None: the last)
        # linear: the rows the head is fitted on (image digests, targets), kept with the model;
        # prior_rows: those of the model that FIT MODEL continues (see _with_prior_rows)
        self.rows, self.prior_rows, self.prior_used, self.prior_missing = None, None, 0, 0
        self.prior_source = None  # where the prior rows' embeddings came from
        self.prior_held = 0  # prior rows left out because they are validation rows now
        self.empty_classes = []  # FIT MODEL, linear: class indices that no row of the refit holds
        self.cache_key = None  # linear: the embedding cache's backbone key, when the cache was used
        self.cache_hits = 0  # images whose frozen-network output came from the embedding cache
        self.frozen_stages = 0  # finetune: the first stages kept pretrained (_frozen_stages)

    # -- linear: frozen backbone, logistic head on embeddings computed once
    def linear(self):
        t0 = time.perf_counter()
        cfg = self.config
        self.model.eval()
        transform = eval_transform(self.pre)

        cache = None
        if cfg.embedding_cache:
            cache = EmbeddingCache.for_backbone(self.model, linear_head(self.model), self.pre,
                                                self.precision, self.device)

        def embed(paths, skipped, desc, digests=None):
            return self.frozen_pass(pre_logits, paths, skipped, desc, transform, cache, digests)

        # digests: the cache's keys, and what a model keeps of its rows (FIT MODEL refits on them)
        digests = [file_digest(p) for p in self.paths] if cache is not None or self.prior_rows is not None else None
        with frozen_layers(self.model, self.pre["input_size"]):  # for the embedding passes
            feats, rows = embed(self.paths, self.skipped, "embeddings (train)", digests)
            y = torch.tensor(self.y, dtype=self.target_dtype)[rows]
            if len(y) == 0:
                raise DataError("None of the training images could be read")
            if digests is not None:
                digests = [digests[i] for i in rows.tolist()]
                held = {file_digest(p) for p in self.val_paths or []} if self.prior_rows is not None else set()
                feats, y, digests = self._with_prior_rows(cache, feats, y, digests, held)
            # (FIT MODEL: a row given again with another label leaves its old class, perhaps empty)
            counts = y.sum(0) if y.ndim == 2 else torch.bincount(y, minlength=linear_head(self.model).out_features)
            self.empty_classes = [i for i, n in enumerate(counts.tolist()) if n == 0]
            val = None
            if self.val_paths:
                vf, vrows = embed(self.val_paths, self.val_skipped, "embeddings (validation)")
                val = (vf, torch.tensor(self.val_y, dtype=self.target_dtype)[vrows])
        self.train_rows, self.val_rows = len(y), (len(val[1]) if val else 0)
        self.images_seen = self.train_rows + self.val_rows
        head = linear_head(self.model)
        w, b, self.history, opts = fit_head(
            feats.numpy(), y.numpy(), (val[0].numpy(), val[1].numpy()) if val else None, head.out_features,
            self.task, l2=cfg.l2, epochs=cfg.epochs, seed=cfg.seed, progress=cfg.progress,
            seconds_before=time.perf_counter() - t0, images_before=self.val_rows)
        if digests is not None and None not in digests:  # what a later FIT MODEL refits on
            self.rows = kept_rows(digests, y, feats)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(w).to(head.weight))
            head.bias.copy_(torch.from_numpy(b).to(head.bias))
        self.cache_key = None if cache is None else os.path.basename(cache.folder)
        return {**opts, "cached_embeddings": self.cache_hits}

    def frozen_pass(self, fn, paths, skipped, desc, transform, cache=None, digests=None):
        """`fn(model, x)` over the images at `paths` without gradients, through `cache` (an
        EmbeddingCache) where given: (outputs, row indices of the images read); unreadable ones
        join `skipped`, cache hits count in `cache_hits`. Linear's embeddings, top's activations."""
        cfg = self.config

        def compute(some, some_skipped):
            return self.forward(self.model, some, self.pre, transform, fn, device=self.device,
                                precision=self.precision, batch_size=self.batch_size, num_workers=cfg.num_workers,
                                progress=cfg.progress, desc=desc, on_error=cfg.on_error, skipped=some_skipped)
        if cache is None:
            return compute(paths, skipped)
        out, rows, missed, hits = cached_forward(cache, paths, compute, digests)
        skipped.update(missed)
        self.cache_hits += hits
        return out, rows

    def _with_prior_rows(self, cache, feats, y, digests, held=frozenset()):
        """FIT MODEL on a linear model: its original training rows join the new ones (their
        embeddings as the model keeps them, else from the cache; a row given again takes its new
        label), so that the refitted head keeps what the first one learned. Those among the
        validation rows (`held`: their digests) are left out: a row trained on scores itself."""
        if self.prior_rows is None:
            return feats, y, digests
        new = set(digests)
        old = [(bytes(d.tolist()), i) for i, d in enumerate(self.prior_rows["digests"])]
        self.prior_held = sum(d in held and d not in new for d, _ in old)
        old = [(d, i) for d, i in old if d not in new and d not in held]
        embeddings = kept_features(self.prior_rows)
        self.prior_source = "the model" if embeddings is not None else "the embedding cache"
        if embeddings is not None:
            found = {d: embeddings[i] for d, i in old}
        else:  # a model of more rows than it keeps embeddings for: the cache may still have them
            found = cache.get([d for d, _ in old]) if cache is not None else {}
        kept = [(d, i) for d, i in old if d in found]
        self.prior_used, self.prior_missing = len(kept), len(old) - len(kept)
        if not kept:
            return feats, y, digests
        targets = torch.as_tensor(self.prior_rows["targets"]).to(y.dtype)[[i for _, i in kept]]
        return (torch.cat([feats, torch.from_numpy(np.stack([found[d] for d, _ in kept])).to(feats.dtype)]),
                torch.cat([y, targets]), digests + [d for d, _ in kept])

    # -- finetune: the network but its first stages, with augmentation
    def finetune(self, lr, group=None):
        """`group` (ml/strategy.py): the DDP process group this run is one rank of; each rank
        trains on its share of the rows, with its share of each batch."""
        from pixql.ml.strategy import Single

        group = group or Single()
        cfg = self.config
        model, device = self.model, self.device
        augment = cfg.augment or "light"
        wd = cfg.weight_decay if cfg.weight_decay is not None else (0.05 if cfg.optimizer == "adamw" else 0.0)
        persistent = cfg.epochs > 1
        if group.world > 1:  # each rank its own augmentations; the sampler shares the rows out
            _seed_everything(cfg.seed + group.rank)
        train_rows = ImageRows(self.paths, self.y, train_transform(self.pre, augment), draft_size(self.pre))
        train_sampler = group.sampler(train_rows, shuffle=True, seed=cfg.seed)
        train_loader = make_loader(
            train_rows, group.per_rank(self.batch_size), device, shuffle=True, num_workers=cfg.num_workers,
            seed=cfg.seed, persistent=persistent, sampler=train_sampler,
        )
        val_loader = None
        if self.val_paths:
            val_rows = ImageRows(self.val_paths, self.val_y, eval_transform(self.pre), draft_size(self.pre))
            val_loader = make_loader(
                val_rows, group.per_rank(self.batch_size), device, num_workers=cfg.num_workers, seed=cfg.seed,
                persistent=persistent, sampler=group.sampler(val_rows, shuffle=False, seed=cfg.seed),
                threaded=True,  # (the training rows' random draws stay in one thread)
            )
        # Batch norms that learn their statistics (a network trained from scratch) cannot train on
        # a batch of one image (one value per channel at the smallest feature maps): such a batch
        # is passed over, and batch_size=1 refused. Pretrained ones keep their statistics (below).
        norms_learn = not self.pretrained_backbone and any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if norms_learn and group.per_rank(self.batch_size) < 2:
            raise OptionError(f"batch_size={self.batch_size}: the network's batch norms learn from each batch "
                              "(a network trained from scratch), which takes at least 2 images a batch"
                              + (" on each worker" if group.world > 1 else ""), option="batch_size")
        # before DDP's wrap, which hooks only the parameters that train
        freeze_stages(model, self.frozen_stages)
        net = group.wrap(model)  # what runs the steps (DDP: gradients averaged over the ranks)
        optimizer = _optimizer(cfg.optimizer, model, lr, wd)
        steps_per_epoch = max(1, len(train_loader))
        total = steps_per_epoch * cfg.epochs
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

        scheduler = warmup_then_cosine(optimizer, warmup, total, constant=cfg.scheduler == "constant")
        # fp16 needs its gradients scaled against underflow; bf16 and fp32 do not.
        scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16" and device.type == "cuda")
        keeper = BestEpoch(self, lambda: copy.deepcopy(model.state_dict()), model.load_state_dict)
        splitter = BatchSplitter("training")
        # frozen statistics (below) let the batch norms run inside the convolutions
        folding = Folding(model, enabled=self.pretrained_backbone)
        # oneDNN's bf16 weight gradient of large depthwise kernels is slow on a CPU (ml/depthwise_grads.py)
        slow_grads = device.type == "cpu" and self.precision == "bf16"
        watch = _LossWatch(cfg)

        for epoch in range(1, cfg.epochs + 1):
            t1 = time.perf_counter()
            if hasattr(train_sampler, "set_epoch"):
                train_sampler.set_epoch(epoch)
            # forward / backward / update over the training rows
            model.train()
            if self.pretrained_backbone:
                # Keep the pretrained batch-norm statistics (Keras' fine-tuning advice): small
                # batches of a small data set would otherwise drag them away from what the
                # other layers expect, and eval-mode predictions would suffer.
                for m in model.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()
            tally = Tally(self.task)
            shown = len(train_sampler) if train_sampler is not None else len(self.paths)  # this rank's share
            bar = progress_bar(shown, f"epoch {epoch}/{cfg.epochs}", cfg.progress, leave=True)
            with bar, folding.applied(trainable=True), fp32_weight_grads(model, enabled=slow_grads):
                for x, y, _ in group.joined(net, batches(train_loader, cfg.on_error, self.skipped)):
                    if len(y) < 2 and norms_learn:  # (a last batch of one: see norms_learn)
                        continue
                    rows = len(y)

                    def chunk_step(cx, cy):
                        # each chunk's mean loss weighted by its share: the gradients sum to the batch's
                        cx, cy = to_input(cx, device), cy.to(device, non_blocking=True)
                        with autocast(device, self.precision):
                            logits = net(cx)
                            loss = self.task.loss(logits.float(), cy) * (len(cy) / rows)
                        scaler.scale(loss).backward()
                        return logits.detach().float(), loss.detach()

                    parts = splitter.run(chunk_step, x, y,
                                         restart=lambda: optimizer.zero_grad(set_to_none=True))
                    batch_loss = float(sum(p[1] for p in parts))
                    watch.check(batch_loss, epoch, scheduler.last_epoch + 1)  # before the update
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    logits = torch.cat([p[0] for p in parts])
                    tally.add(logits, y.to(logits.device), batch_loss)
                    bar.update(len(y))
                    postfix = {"loss": f"{tally.loss:.4f}", **tally.postfix()}
                    bar.set_postfix(postfix)
                    group.step(len(y), epoch, postfix)
                # every rank's sums (the same on all of them: early stopping decides alike)
                tally = _reduced(tally, group)
                if tally.seen == 0:
                    raise DataError("None of the training images could be read")
                # evaluation on the validation rows
                v_loss = v_acc = v_tally = None
                if val_loader is not None:
                    v_tally = _reduced(self._evaluate(val_loader), group)
                    v_loss, v_acc = v_tally.loss, v_tally.accuracy
                    bar.set_postfix(loss=f"{tally.loss:.4f}", **tally.postfix(), **v_tally.postfix("val_"))
            images = tally.seen + (v_tally.seen if v_tally is not None else 0)
            self.images_seen += images
            self._record(epoch, tally.loss, tally.accuracy, v_loss, v_acc,
                         time.perf_counter() - t1, images, tally, v_tally)

            if keeper.after(epoch, tally, v_tally):
                break
        keeper.restore(epoch)
        self.skipped, self.val_skipped = group.union(self.skipped), group.union(self.val_skipped)
        self.train_rows = len(self.paths) - len(self.skipped)
        self.val_rows = len(self.val_paths) - len(self.val_skipped)
        return {"learning_rate": lr, "optimizer": cfg.optimizer, "weight_decay": wd,
                "scheduler": cfg.scheduler, "warmup_epochs": cfg.warmup_epochs, "augment": augment,
                "early_stopping": cfg.early_stopping, "frozen_stages": self.frozen_stages}

    @torch.no_grad()
    def _evaluate(self, loader):
        self.model.eval()
        tally = Tally(self.task)
        for x, y, _ in batches(loader, self.config.on_error, self.val_skipped):
            x, y = to_input(x, self.device), y.to(self.device)
            with autocast(self.device, self.precision):
                logits = self.model(x).float()
            tally.add(logits, y)
        return tally

    def _record(self, epoch, loss, acc, v_loss, v_acc, seconds, images, tally=None, v_tally=None):
        self.history.append(history_entry(self.task, epoch, loss, acc, v_loss, v_acc, seconds, images, tally, v_tally))


class BestEpoch:
    """Which epoch's weights a run keeps: the best validated one (the task's metric, then the
    lower loss), not whichever came last; `early_stopping` ends the run once that many epochs
    have not improved on it. Without validation rows the last epoch is kept, unless early
    stopping is on: it then watches the training loss, and keeps the epoch of its lowest.
    `snapshot()` copies what the epochs change, `load(state)` puts it back."""

    def __init__(self, run, snapshot, load):
        self.run, self.snapshot, self.load = run, snapshot, load
        self.key, self.state, self.stale = None, None, 0

    def after(self, epoch, tally, v_tally):
        """Called after each epoch is recorded; True when early stopping ends the run there."""
        run, patience = self.run, self.run.config.early_stopping
        if v_tally is not None and v_tally.seen:
            key = (run.history[-1][f"val_{run.task.metric}"], -v_tally.loss)
        else:
            key = (-tally.loss,) if patience else None
        if key is None:
            return False
        if self.key is None or key > self.key:
            self.key, self.stale, run.saved_epoch = key, 0, epoch
            # (after the last epoch the model itself is that state)
            self.state = self.snapshot() if epoch < run.config.epochs else None
            return False
        self.stale += 1
        return bool(patience) and self.stale >= patience

    def restore(self, last_epoch):
        """Back to the kept epoch's weights, when it was not `last_epoch`, the one run last."""
        if self.state is not None and self.run.saved_epoch != last_epoch:
            self.load(self.state)


def warmup_then_cosine(optimizer, warmup, total, constant=False):
    """The learning rate per step: a linear warm-up over `warmup` steps, then a cosine to zero
    at step `total` (or `constant`)."""
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        if constant:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _reduced(tally, group):
    """`tally` summed over the ranks of `group` (itself on one process)."""
    if group.world == 1:
        return tally
    fields = ("loss_sum", "correct", "seen", "tp", "fp", "fn")
    for name, value in zip(fields, group.all_reduce([getattr(tally, f) for f in fields])):
        setattr(tally, name, value if name == "loss_sum" else int(round(value)))
    return tally


# A batch loss this many times the first one (and above EXPLODED_LOSS) means training is
# running away: say so, while the loss is still a number.
EXPLOSION_FACTOR, EXPLODED_LOSS = 10.0, 20.0


class _LossWatch:
    """Stops training on a loss that is not a number; warns once on one that explodes."""

    def __init__(self, config):
        self.config = config
        self.first = None
        self.warned = False

    def check(self, loss, epoch, step):
        if not math.isfinite(loss):
            raise TrainingError(
                f"training diverged at epoch {epoch}, step {step}: the loss is {loss}; lower learning_rate"
                f"{lr_hint(self.config)} (or use precision='fp32') and build again; no model was saved")
        if self.first is None:
            self.first = loss
        elif not self.warned and loss > max(EXPLOSION_FACTOR * self.first, EXPLODED_LOSS):
            import warnings

            self.warned = True
            warnings.warn(f"pixql: the training loss exploded from {self.first:.4g} to {loss:.4g} at epoch "
                          f"{epoch}, step {step}: learning_rate{lr_hint(self.config)} is probably too high, "
                          "and the model may be useless", stacklevel=2)


def nonfinite_tensors(state_dict):
    """Names of the floating-point tensors holding a NaN or an infinity. From each tensor's
    minimum and maximum (NaN propagates through both): torch.isfinite on the CPU took 0.8-1.7 s
    over ConvNeXt_Tiny's 28M weights, aminmax 6 ms."""
    floats = [(k, v) for k, v in state_dict.items() if v.is_floating_point() and v.numel()]
    if not floats:
        return []
    extremes = torch.stack([torch.stack(torch.aminmax(v)).float() for _, v in floats])
    finite = torch.isfinite(extremes).all(dim=1).tolist()
    return [k for (k, _), ok in zip(floats, finite) if not ok]


def _optimizer(name, model, lr, wd):
    # timm's factory: no weight decay on biases and norm layers; nesterov momentum for SGD.
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt=name, lr=lr, weight_decay=wd, momentum=0.9)
