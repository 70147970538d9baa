"""CLIP (open_clip): photos and text in one vector space, for text-to-image search and zero-shot
labels. Names: `clip` (ViT-B-32, LAION-2B weights), `clip:<open_clip model>` with that model's
first listed weights, `clip:<model>:<weights tag>`. Weights come from a local file
(OPTIONS (weights=...)) or the Hugging Face cache; pixql downloads nothing itself, and says how
to provide them when they are missing (no installed package ships CLIP weights).
"""

import contextlib
import os
import pickle
import re

import numpy as np
import torch

from pixql.errors import CatalogError, WeightsUnavailableError
from pixql.ml.embed import Embedder, normalized

DEFAULT_MODEL, DEFAULT_TAG = "ViT-B-32", "laion2b_s34b_b79k"
PROMPT = "a photo of a {}."  # CLIP's own zero-shot template
_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def parse_name(name):
    """'clip[:model[:tag]]' -> (open_clip model name, weights tag or None)."""
    _, *rest = str(name).split(":")
    if not rest:
        return DEFAULT_MODEL, DEFAULT_TAG
    model = rest[0]
    tag = rest[1] if len(rest) > 1 else None
    import open_clip

    known = {m.lower(): m for m in open_clip.list_models()}
    if model.lower() not in known:
        raise CatalogError(f"no CLIP model '{model}' in open_clip (open_clip.list_models() lists them, e.g. "
                           f"clip:{DEFAULT_MODEL})")
    model = known[model.lower()]
    tags = open_clip.list_pretrained_tags_by_model(model)
    if tag is None:
        tag = DEFAULT_TAG if model == DEFAULT_MODEL else (tags[0] if tags else None)
    return model, {t.lower(): t for t in tags}.get(tag.lower(), tag) if tag else tag


def cached_weights(model, tag):
    """The weights file of (model, tag) in the local Hugging Face cache, else None."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(model, tag) if tag else {}
    repo = (cfg or {}).get("hf_hub", "").strip("/")
    for name in _FILES if repo else ():
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def tokenizer(model_name):
    """open_clip's tokenizer for `model_name`, without the network: a Hugging Face tokenizer (SigLIP's,
    CLIPA's, multilingual models') from the local cache only, else WeightsUnavailableError."""
    import open_clip

    text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg") or {}
    hub_name = text_cfg.get("hf_tokenizer_name")
    if not hub_name and "siglip" not in model_name.lower():
        return open_clip.get_tokenizer(model_name)  # CLIP's own, shipped with open_clip
    if hub_name:
        with contextlib.suppress(OSError, ValueError):  # (transformers': not in the cache)
            return open_clip.get_tokenizer(model_name, local_files_only=True)
    where = ("is not in the local Hugging Face cache" if hub_name else
             "is read by open_clip from the network, never from a cache")
    raise WeightsUnavailableError(
        f"CLIP {model_name}'s text tokenizer ({hub_name or 'SigLIP'}) {where}, and pixql downloads nothing: run "
        f"once where there is internet: python -c \"import open_clip; open_clip.get_tokenizer('{model_name}')\" "
        "and copy the Hugging Face cache (HF_HOME, by default ~/.cache/huggingface/hub) here. Photos need no "
        "tokenizer: CONVERT and SEARCH by photo work without it")


def _preprocessing(clip_model):
    """open_clip's image preprocessing as pixql's (a shortest-side resize and centre crop), so
    that CLIP's images go through pixql's loader, decoding and embedding cache."""
    cfg = clip_model.visual.preprocess_cfg
    size = cfg.get("size", 224)
    side = size if isinstance(size, int) else size[-1]
    return {"input_size": [3, int(side), int(side)], "interpolation": cfg.get("interpolation", "bicubic"),
            "crop_pct": 1.0, "crop_mode": "center", "mean": list(cfg["mean"]), "std": list(cfg["std"])}


class ClipEmbedder(Embedder):
    """CLIP's image tower as an Embedder, plus its text tower (`embed_text`)."""

    kind = "image+text"

    def __init__(self, name, weights=None, device="auto", precision="auto"):
        import open_clip

        self.name = name
        model_name, tag = parse_name(name)
        path = os.path.expanduser(weights) if weights else cached_weights(model_name, tag)
        published = open_clip.list_pretrained_tags_by_model(model_name)
        if path is None and tag not in published:  # nothing to download where there is internet either
            raise WeightsUnavailableError(
                (f"open_clip has no weights tag '{tag}' for {model_name} (its tags: {', '.join(published)})"
                 if published and tag else f"open_clip publishes no weights for {model_name}")
                + f": give a checkpoint of {model_name} with OPTIONS (weights='open_clip_model.safetensors')")
        if path is None:
            raise WeightsUnavailableError(
                f"CLIP weights for {model_name} ({tag}) are not here, and pixql downloads nothing. "
                f"To provide them: run once where there is internet: python -c \"import open_clip; "
                f"open_clip.create_model_and_transforms('{model_name}', pretrained='{tag}')\" and copy the "
                "Hugging Face cache (HF_HOME, by default ~/.cache/huggingface/hub) here; or give a local file "
                "with OPTIONS (weights='open_clip_model.safetensors'). Offline without CLIP: keyword search "
                "with SEARCH IMAGE USING imagenet_classifier OPTIONS (search_by='text'), and CONVERT / "
                "SEARCH by photo USING EfficientNet_Lite0")
        if os.path.isdir(path):
            raise WeightsUnavailableError(f"CLIP weights file {path} is a folder: give the checkpoint file in it")
        if not os.path.isfile(path):
            raise WeightsUnavailableError(f"CLIP weights file not found: {path}")
        try:
            clip_model = open_clip.create_model(model_name, pretrained=path)
        except Exception as exc:  # a file of another model, or not a checkpoint at all
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # (not every key of the model)
            what = f"its tensors are not {model_name}'s" if "state_dict" in first else \
                re.sub(r"\x1b\[[0-9;]*m", "", first)[:300]  # (torch's text has terminal colours)
            if isinstance(exc, pickle.UnpicklingError):  # torch's advice (weights_only=False) is not taken
                what = "it is no checkpoint of tensors (a whole pickled model?), and pixql unpickles no code"
            raise WeightsUnavailableError(f"cannot load CLIP {model_name} from {path}: {what}; give the checkpoint "
                                          f"open_clip saves for {model_name}") from exc
        self.model_name, self._tokenizer = model_name, None
        self.logit_scale = float(clip_model.logit_scale.detach().exp())
        super().__init__(clip_model, _preprocessing(clip_model), features=lambda m, x: m.encode_image(x),
                         device=device, precision=precision, fold=False)

    @property
    def tokenizer(self):
        """open_clip's tokenizer of the model, made when text is first embedded (a photo's vector
        needs none): from the local Hugging Face cache where it is a Hugging Face one."""
        if self._tokenizer is None:
            self._tokenizer = tokenizer(self.model_name)
        return self._tokenizer

    @torch.inference_mode()
    def embed_text(self, texts):
        """float32 [n, dim] unit vectors of the texts."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return normalized(self.model.encode_text(tokens).float().cpu().numpy())


class ZeroShot:
    """A CLIP classifier over any labels: each label's prompt is a class (PREDICT's interface)."""

    def __init__(self, embedder, labels):
        self.embedder = embedder
        self.classes = list(labels)
        self.text = embedder.embed_text([PROMPT.format(label) for label in self.classes])

    def predict_proba(self, paths, batch_size=None, progress=True, num_workers=None, on_error="fail"):
        images = self.embedder.embed(paths, batch_size, progress, on_error=on_error)
        logits = self.embedder.logit_scale * (np.nan_to_num(images) @ self.text.T)
        probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        probs[np.isnan(images).any(axis=1)] = np.nan
        return probs
