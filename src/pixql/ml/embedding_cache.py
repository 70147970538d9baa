"""Backbone embeddings kept on disk, so that a second linear-mode BUILD on the same images
skips the network (SPEC section 2, "Caches").

Layout: `<PIXQL_CACHE>/embeddings/<backbone key>/<shard>.safetensors`. The backbone key hashes
everything an embedding depends on besides the image: the backbone's weights (every tensor of
the state dict but the head), the preprocessing, the precision, device type and decoder, and the
versions of pixql, torch, timm, torchvision and Pillow. A shard holds `digests` (uint8 [n, 16],
blake2b of each image file's bytes) and `embeddings` (float32 [n, ...]; `embeddings_bf16`,
uint16, when every value is a bf16 one: their upper halves); each BUILD that computed something adds one shard,
and from MAX_SHARDS on a write first folds the smallest together (up to MERGE_BYTES).
train_mode='top' keeps its frozen part's activations ([n, 192, 7, 7] for Lite0) the same way,
under a key of their own. Entries are keyed by content, so an image file that changes gets a new digest
and its old entry is simply never found. Shards are written to a temporary name and renamed, so
readers see whole files only; the folder is safe to delete at any time, and a cache that cannot
be read or written costs time, never a failed statement.

Reading and writing shards needs numpy only (a linear BUILD whose every embedding is cached
runs without torch, ml/cached_linear.py); computing a backbone key and a forward pass need torch.
"""

import hashlib
import json
import os
import sys
import uuid
import warnings

import numpy as np

from pixql.ml.cache_folder import cache_root

DIGEST_BYTES = 16
FORMAT = 6  # bump when an embedding or a shard changes (decoding, transforms, batch-norm folding; 3: bf16
# shards; 4: the crop's region resized alone; 5: resized by torch in uint8, data.ResizeCrop; 6: a PNG's
# one transparent colour decoded white)
MAX_SHARDS = 32  # from this many shards on, a write first merges the smallest ones
# A merge folds the smallest shards together up to this many bytes; larger shards stay as they
# are (a namespace of 'top' activations, ~19 KB a photo in bf16, would otherwise be read whole
# and rewritten at every merge).
MERGE_BYTES = 256 << 20
_CHUNK = 1 << 20
# A linear model keeps its training rows' embeddings up to this many bytes (bf16: 26,000 rows of
# Lite0's 1280 numbers; float32 half that): a few MB for the usual few thousand photos.
KEPT_FEATURE_BYTES = 64 << 20


def file_digest(path):
    """blake2b of the file's bytes, or None when it cannot be read (the caller's decode then
    reports the file the usual way). A Region's digest covers its box, padding and background,
    and its mask (a file's bytes, or its polygons / RLE)."""
    from pixql.ml.images import MaskShape, Region

    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    if isinstance(path, Region):
        if isinstance(path.mask, MaskShape):
            mask = repr(path.mask).encode()
        else:
            mask = file_digest(path.mask) if path.mask is not None else b""
        if mask is None:
            return None
        h.update(json.dumps([list(map(float, path.box)), path.normalized, path.padding, path.background]).encode())
        h.update(mask)
        path = path.path
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    return h.digest()


def backbone_key(model, head, preprocessing, precision, device, output=None, names=None):
    """Hex key of what the embeddings of `model` (without `head`) depend on. `output`: what is
    kept, when not the pre-logits features (train_mode='top' keeps the frozen part's
    activations); `names`: only the weights whose state-dict names it accepts count (the frozen
    part's, so that a tuned top does not change the key)."""
    import PIL
    import timm
    import torch
    import torchvision

    import pixql
    from pixql.ml.device_decode import decoding

    h = hashlib.blake2b(digest_size=16)
    # Pillow and torchvision decode and resize: their versions can move pixels (Pillow's order of
    # resampling passes changed in 13)
    recipe = {"format": FORMAT, "pixql": pixql.__version__, "torch": torch.__version__,
              "timm": timm.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__,
              "arch": type(model).__name__, "preprocessing": preprocessing,
              "precision": precision, "device": torch.device(device).type,
              "decoding": decoding(preprocessing, device)}
    if output is not None:  # what is kept, when not the pre-logits (linear's, CONVERT's)
        recipe["output"] = output
    h.update(json.dumps(recipe, sort_keys=True, default=str).encode())
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    state = model.state_dict(keep_vars=True)
    hash_tensors(h, {name: t for name, t in state.items()
                     if id(t) not in head_ids and (names is None or names(name))})
    return h.hexdigest()


def hash_tensors(h, tensors):
    """Feed named tensors (names, dtypes, shapes and bytes, in name order) into hash `h`."""
    import torch

    for name in sorted(tensors):
        data = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        h.update(data.reshape(-1).view(torch.uint8).numpy())


class EmbeddingCache:
    """The shards of one backbone key."""

    def __init__(self, folder):
        self.folder = folder

    @classmethod
    def for_backbone(cls, model, head, preprocessing, precision, device, root=None, output=None, names=None):
        key = backbone_key(model, head, preprocessing, precision, device, output, names)
        return cls(os.path.join(root or cache_root(), "embeddings", key))

    def _shards(self):
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        return sorted(os.path.join(self.folder, n) for n in names if n.endswith(".safetensors"))

    def _read(self, shard, wanted=None):
        """{digest: embedding row} for the digests of `wanted` that the shard holds (all of
        them when `wanted` is None)."""
        try:
            loaded = _load(shard, wanted)
        except FileNotFoundError:  # merged away by another process meanwhile
            return {}
        except Exception as e:  # a damaged shard: drop it, recompute what it held
            warnings.warn(f"pixql: ignoring a damaged embedding-cache file {shard} ({e})", stacklevel=3)
            _remove(shard)
            return {}
        if loaded is None:  # none of them there
            return {}
        name, digests, stored = loaded
        found = [i for i, d in enumerate(map(bytes, digests)) if wanted is None or d in wanted]
        embeddings = stored[found]  # only the rows wanted
        if name == "embeddings_bf16":  # bf16 values kept as their upper 16 bits (see _write)
            embeddings = _from_bf16(embeddings)
        return {bytes(digests[i]): row for i, row in zip(found, embeddings)}

    def get(self, digests):
        """{digest: float32 numpy embedding} for those of `digests` (bytes or None) that are cached."""
        wanted = {d for d in digests if d is not None}
        out = {}
        for shard in self._shards():
            if len(out) == len(wanted):
                break
            out.update(self._read(shard, wanted - out.keys()))
        return out

    def put(self, digests, embeddings):
        """Add rows (digests: list of bytes, embeddings: [n, ...] array or tensor); True when written."""
        if not digests:
            return True
        try:
            os.makedirs(self.folder, exist_ok=True)
            shards = self._shards()
            if len(shards) >= MAX_SHARDS:
                try:
                    self._merge(shards)
                except Exception as e:  # (disk full...): the new rows are still worth writing
                    warnings.warn(f"pixql: could not merge the embedding cache's shards in {self.folder} ({e})",
                                  stacklevel=3)
            self._write(digests, embeddings)
            return True
        except Exception as e:  # OSError, or safetensors' own error for the same causes
            warnings.warn(f"pixql: could not write the embedding cache in {self.folder} ({e}); "
                          "set PIXQL_CACHE to a writable folder to keep embeddings between builds",
                          stacklevel=3)
            return False

    def _write(self, digests, embeddings):
        values = np.ascontiguousarray(as_numpy(embeddings), dtype=np.float32)
        upper = _as_bf16(values)
        self._save({"embeddings": values} if upper is None else {"embeddings_bf16": upper}, digest_array(digests))

    def _save(self, tensors, digests):
        from safetensors.numpy import save_file

        name = uuid.uuid4().hex
        tmp = os.path.join(self.folder, f".{name}.tmp")
        (values,) = tensors.values()
        save_file(dict(tensors, digests=digests), tmp, metadata={CHECKSUM: _checksum(values, digests)})
        os.replace(tmp, os.path.join(self.folder, f"{name}.safetensors"))

    def _merge(self, shards):
        """Fold the smallest shards into one, up to MERGE_BYTES in all, in the form they are
        stored in (bf16 stays bf16), then remove them; shards larger than that stay as they are.
        A shard that cannot be read is left for `_read` to drop."""
        picked, total = [], 0
        for size, shard in sorted((_size(s), s) for s in shards):
            if total + size > MERGE_BYTES:
                break
            picked.append(shard)
            total += size
        if len(picked) < 2:  # only large shards: nothing worth reading, let them be
            return
        stored = {}  # the values' tensor name -> ([digests], [values]), rows met first kept
        seen, merged = set(), []
        for shard in picked:
            try:
                name, digests, values = _load(shard)
            except Exception:  # (left for _read to drop: its values never get a new checksum here)
                continue
            new = [i for i, d in enumerate(map(bytes, digests)) if d not in seen]
            seen.update(bytes(digests[i]) for i in new)
            parts = stored.setdefault(name, ([], []))
            parts[0].append(digests[new])
            parts[1].append(values[new])
            merged.append(shard)
        if len(merged) < 2:
            return
        for name, (digests, values) in stored.items():
            self._save({name: np.concatenate(values)}, np.concatenate(digests))
        for shard in merged:
            _remove(shard)


# A shard's SHA-256 of its values and digests, in its metadata: a file damaged in place (its size
# the same, which safetensors' own reading cannot tell) is dropped and recomputed, never served.
# (Shards written before it have none, and are read as they are.)
CHECKSUM = "pixql_sha256"


def _checksum(values, digests):
    h = hashlib.sha256(np.ascontiguousarray(values).view(np.uint8).reshape(-1))
    h.update(np.ascontiguousarray(digests).view(np.uint8).reshape(-1))
    return h.hexdigest()


def _load(shard, wanted=None):
    """(the values' tensor name, digests, values) of a shard file, or None when it holds none of
    the digests `wanted` (its values left unread); ValueError where its values are not those its
    checksum was made of."""
    from safetensors import safe_open

    with safe_open(shard, framework="np") as f:
        digests = f.get_tensor("digests")
        if wanted is not None and not any(d in wanted for d in map(bytes, digests)):
            return None
        name = _stored_name(f)
        values = f.get_tensor(name)
        written = (f.metadata() or {}).get(CHECKSUM)
    if written is not None and written != _checksum(values, digests):  # (bytes changed in place)
        raise ValueError("its values are not those written")
    return name, digests, values


def _stored_name(shard):
    """The tensor an open shard keeps its values in: float32 `embeddings`, or `embeddings_bf16`."""
    return "embeddings" if "embeddings" in shard.keys() else "embeddings_bf16"


def _as_bf16(values):
    """The upper 16 bits of each float32 of `values` when every lower half is zero (values
    computed in bf16: exactly what they hold, in half the bytes), else None. Views, and one
    half-sized copy: a top BUILD's activations are hundreds of MB."""
    if not values.size or sys.byteorder != "little":
        return None
    halves = values.view(np.uint16).reshape(-1, 2)  # (lower, upper) per value on little-endian
    if halves[:, 0].any():
        return None
    return np.ascontiguousarray(halves[:, 1]).reshape(values.shape)


def _from_bf16(upper):
    out = np.zeros(upper.shape + (2,), dtype=np.uint16)
    out[..., 1] = upper
    return out.view(np.float32).reshape(upper.shape)


def kept_rows(digests, targets, features):
    """What a linear model keeps of its training rows for FIT MODEL (the store's rows file): the
    images' digests and targets and, up to KEPT_FEATURE_BYTES, their embeddings as the cache holds
    them (bf16 where they are bf16 values, else float32), so that a refit needs neither the images
    nor the cache, which may be deleted at any time. Larger sets keep digests only: a refit then
    finds their embeddings in the cache, where they still are."""
    targets = targets.detach().cpu().numpy() if hasattr(targets, "detach") else np.asarray(targets)
    rows = {"digests": digest_array(digests), "targets": targets}  # (class indices stay integers)
    values = np.ascontiguousarray(as_numpy(features), dtype=np.float32)
    upper = _as_bf16(values) if values.nbytes <= 2 * KEPT_FEATURE_BYTES else None
    if upper is not None:
        rows["features_bf16"] = upper
    elif values.nbytes <= KEPT_FEATURE_BYTES:
        rows["features"] = values
    return rows


def kept_features(rows):
    """The embeddings a model's rows file keeps (float32, one row per digest), or None."""
    if "features_bf16" in rows:
        return _from_bf16(np.asarray(rows["features_bf16"]))
    if "features" in rows:
        return as_numpy(rows["features"])
    return None


def digest_array(digests):
    """Digests (bytes) as a uint8 [n, DIGEST_BYTES] array, as shards and a model's rows keep them."""
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), DIGEST_BYTES)


def as_numpy(x):
    """A torch tensor (on any device, in any float type) or an array, as a float32 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x, dtype=np.float32)


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:  # merged away by another process meanwhile
        return float("inf")


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def cached_forward(cache, paths, compute, digests=None):
    """Embeddings of the images at `paths`, from `cache` where it has them.

    `compute(paths, skipped)` embeds a list of paths the way runtime.forward_rows does:
    (float32 outputs of the images that were read, their indices into that list), adding the
    indices of unreadable ones to `skipped`. Returns (outputs, row indices into `paths`,
    skipped indices into `paths`, number of cache hits), rows in ascending order, as torch
    tensors. `digests`: the paths' file_digest values, when the caller has them already.
    """
    import torch

    digests = [file_digest(p) for p in paths] if digests is None else digests
    hits = cache.get(digests)
    missing = [i for i, d in enumerate(digests) if d not in hits]
    # One computation per distinct content: a table often names the same photo in many rows (a
    # million-row CONVERT of 200 photos decoded every row before). Unreadable files (no digest)
    # stay one each, so that each reports its own path.
    def same(i):
        return digests[i] if digests[i] is not None else i

    first_of = {}
    for i in missing:
        first_of.setdefault(same(i), i)
    distinct = sorted(first_of.values())
    skipped_sub = set()
    out, sub_rows = compute([paths[i] for i in distinct], skipped_sub) if distinct else (None, None)
    computed, rows = {}, []
    if distinct and len(sub_rows):
        rows = [distinct[j] for j in sub_rows.tolist()]
        computed = dict(zip(rows, as_numpy(out)))
        # A file rewritten while it was being decoded would file its new picture under the
        # old content's digest: keep only rows whose bytes still hash the same.
        fresh = [i for i in rows if digests[i] is not None and file_digest(paths[i]) == digests[i]]
        if len(fresh) == len(rows):  # (the usual case: no copy of what may be hundreds of MB)
            cache.put([digests[i] for i in rows], as_numpy(out))
        elif fresh:
            cache.put([digests[i] for i in fresh], np.stack([computed[i] for i in fresh]))
    skipped = {distinct[j] for j in skipped_sub}
    for i in missing:  # the repeats take their first row's answer
        first = first_of[same(i)]
        if first in computed:
            computed[i] = computed[first]
        elif first in skipped:
            skipped.add(i)
    order = sorted(set(range(len(paths))) - set(missing) | computed.keys())
    if not order:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long), skipped, 0
    if not hits and len(distinct) == len(missing) and order == rows:  # every row computed once, in order
        return torch.from_numpy(as_numpy(out)), torch.tensor(order, dtype=torch.long), skipped, 0
    feats = torch.from_numpy(np.stack([computed[i] if i in computed else hits[digests[i]] for i in order]))
    return feats, torch.tensor(order, dtype=torch.long), skipped, len(paths) - len(missing)
