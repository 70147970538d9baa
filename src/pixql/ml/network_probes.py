"""What a probe pass through a network found, kept in the cache folder (`probes/`) so that a
fresh process loading the same kind of network does not probe again.

Folding batch norms (ml/batchnorm_folding.py) checks with two passes that the folded network
gives the unfolded one's output, and static padding (ml/static_padding.py) records the input size
of each 'SAME' convolution with a third: 0.13-0.15 s of every model load on a 2-core CPU, a
tenth of a cold PREDICT of 200 photos. Both answers depend only on the network's structure and
the code that runs it, so they are kept under a key made of the module tree's text (`repr`:
every layer and its settings), each module class's forward bytecode, the pixql, torch and timm
versions, the device type and the weights' dtype: any change is a new key, and a probe again. A missing, unreadable or unwritable file only means probing.
"""

import contextlib
import hashlib
import json
import os
import uuid

FORMAT = 1


def remembered(model, what, probe):
    """`probe(model)`'s JSON-able answer for this kind of network, from the cache or computed
    (and kept). `what` names the probe and whatever else its answer depends on."""
    path = _path(model, what)
    try:
        with open(path) as f:
            return json.load(f)["answer"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    answer = probe(model)
    partial = f"{path}.{uuid.uuid4().hex}.tmp"  # whole files only: another process may read it
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(partial, "w") as f:
            json.dump({"what": what, "answer": answer}, f)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(partial)
    return answer


def module_names(model):
    """{module: its dotted name in `model`} ('' for the model itself)."""
    return {module: name for name, module in model.named_modules(remove_duplicate=False)}


def _classes(model):
    """Each class in the module tree, where it is defined and the bytecode of its forward: `repr`
    names a class, not what it computes (two classes of one name may wire their layers apart)."""
    kinds = {}
    for module in model.modules():
        kind = type(module)
        if kind not in kinds:
            code = getattr(kind.forward, "__code__", None)
            digest = hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:16] if code else None
            kinds[kind] = f"{kind.__module__}.{kind.__qualname__}:{digest}"
    return sorted(kinds.values())


def _path(model, what):
    from importlib.metadata import PackageNotFoundError, version

    import torch

    import pixql
    from pixql.ml.cache_folder import cache_root

    try:
        timm_version = version("timm")
    except PackageNotFoundError:
        timm_version = None
    like = next(model.parameters(), None)
    where = [like.device.type, str(like.dtype)] if like is not None else None
    text = json.dumps([FORMAT, what, pixql.__version__, torch.__version__, timm_version, where, repr(model),
                       _classes(model)])
    return os.path.join(cache_root(), "probes", hashlib.sha256(text.encode()).hexdigest()[:32] + ".json")
