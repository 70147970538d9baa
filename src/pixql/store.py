"""The model store: one folder per model, written atomically.

    <root>/<name>/manifest.json        base, classes, options, preprocessing, history, ...
    <root>/<name>/weights.safetensors  the whole network's tensors
    <root>/<name>/rows.safetensors     (linear heads) the training rows' image digests, targets and
                                       embeddings (up to a size), so that FIT MODEL refits on them

A model is written into `<root>/.tmp/` and renamed into place only when complete,
so a crash never leaves a half model under its name. An overwritten model is first
renamed into `<root>/.trash/` and removed only after the new one is in place; if a
crash happens between the two renames, opening the store puts the old one back.
Writers take an exclusive file lock, so two processes never mix their files.
"""

import contextlib
import difflib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from pixql.errors import CatalogError, StoreError, signals_held

MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
ROWS = "rows.safetensors"
FORMAT_VERSION = 1
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")  # fullmatch: '$' would also let a name end in a newline


def check_name(name):
    """Model names are plain identifiers: nothing that could leave the store (`../x`, `/abs`)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CatalogError(
            f"invalid model name {name!r}: use letters, digits and underscores, starting with a letter, "
            "128 at most"
        )
    return name


def _nameable(folder):
    """Whether a statement can name the model kept in `folder` (a name, its key: in lowercase)."""
    return bool(_NAME.fullmatch(folder)) and folder == folder.lower()


def _named(manifest, key):
    """The manifest of the model kept in folder `key`, named so (a folder copied under another
    name is that model)."""
    return manifest if str(manifest.get("name", "")).lower() == key else {**manifest, "name": key}


def _key(name):
    # Model names are case-insensitive, like DuckDB's table names.
    return check_name(name).lower()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_tensors(tensors, path):
    """A safetensors file of torch tensors, or of numpy arrays when every value is one."""
    import numpy as np

    if all(isinstance(v, np.ndarray) for v in tensors.values()):
        from safetensors.numpy import save_file

        # (not np.ascontiguousarray, which makes a 0-d counter 1-d)
        save_file({k: np.require(v, requirements="C") for k, v in tensors.items()}, str(path))
    else:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _fsync_dir(path):
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _set_aside_key(folder):
    """The model key of a folder in .trash/ or .tmp/, named `<key>--<uuid>` by save() and drop()."""
    return folder.name.split("--", 1)[0]


def _checked(manifest, required, types):
    """A manifest read from JSON, or ValueError saying why it is none (a JSON list, keys missing,
    a key of another type than `types` says: a type, a tuple of them, or [type], a list of it)."""
    if not isinstance(manifest, dict):
        raise ValueError(f"it holds a JSON {type(manifest).__name__}, not an object")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise ValueError(f"it lacks {', '.join(missing)}")
    for key, kind in types.items():
        value = manifest.get(key)
        if key in manifest and not (isinstance(value, list) and all(isinstance(v, kind[0]) for v in value)
                                    if isinstance(kind, list) else isinstance(value, kind)):
            raise ValueError(f"its {key} is {json.dumps(value)[:40]}, not {_json_kind(kind)}")
    return manifest


def _json_kind(kind):
    names = {str: "text", dict: "an object", list: "a list", int: "a number", float: "a number", type(None): "null"}
    if isinstance(kind, list):
        return f"a list of {names.get(kind[0], kind[0].__name__)}"
    return " or ".join(names.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,)))


class ModelStore:
    def __init__(self, root, read_only=False, required=(), types=None, also_named=()):
        """`read_only`: the store of a database opened read-only; writing a model is an error.
        `required`: the keys every manifest of its owner's holds (the catalog's: classes, network
        ...), besides the weights' checksum save() writes: a manifest without them is damaged.
        `types`: {key: JSON type} of the keys its owner reads (see _checked), where they are there.
        `also_named`: the names of models its owner has besides these (the built-ins), which a
        misspelt name may have meant."""
        self.root = Path(root)
        self.read_only = read_only
        self.required = ("weights_sha256", *required)
        self.types = {"weights_sha256": str, **(types or {})}  # (a key's JSON type, where it is there)
        self.also_named = tuple(also_named)
        self._tmp = self.root / ".tmp"
        self._trash = self.root / ".trash"

    def check_writable(self, what):
        """A StoreError before any work when a model cannot be written here: the database was
        opened read-only, or the store's folder (or the nearest one there is above it) is not
        writable (a read-only file system, another user's folder)."""
        if self.read_only:
            raise StoreError(f"cannot {what}: the database was opened read-only (--read-only, read_only=True), "
                             "which writes neither tables nor models; open it without --read-only to change models")
        folder = self.root
        while not folder.exists() and folder.parent != folder:
            folder = folder.parent
        if not os.access(folder, os.W_OK):
            raise StoreError(f"cannot {what}: the model store {self.root} cannot be written ({folder} is read-only "
                             "to this process); set PIXQL_HOME to a folder it can write", path=str(self.root))

    # -- locking and recovery ------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = open(self.root / ".lock", "a+")
        except OSError as exc:  # (a read-only file system, a full disk)
            raise StoreError(f"the model store {self.root} cannot be written: {exc.strerror or exc}; set "
                             "PIXQL_HOME to a folder that can", path=str(self.root)) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._recover()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def recover(self):
        """Put back what a writer killed mid-save left behind, if no writer is at work now
        (called when a connection opens the store, so that readers see the old model at once)."""
        if self.read_only or not (self._trash.is_dir() or self._tmp.is_dir()):
            return
        try:
            with open(self.root / ".lock", "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # a live writer holds the lock; it recovers before writing anyway
                try:
                    self._recover()
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except OSError:
            pass  # a store we cannot write to: nothing to put back from here

    def _recover(self):
        """Finish or undo what a crashed writer left (called under the lock)."""
        if self._trash.is_dir():
            for old in self._trash.iterdir():
                key = _set_aside_key(old)
                if not (self.root / key).exists() and (old / MANIFEST).exists():
                    os.rename(old, self.root / key)  # crash between the renames: put it back, and say so
                    with contextlib.suppress(Exception):  # (its name as saved; the folder's key else)
                        key = json.loads((self.root / key / MANIFEST).read_text()).get("name") or key
                    import warnings

                    warnings.warn(f"pixql: model '{key}' is back as it was: a process killed while saving over "
                                  "it had set it aside (the new version was not kept)", stacklevel=4)
                else:
                    shutil.rmtree(old, ignore_errors=True)
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)

    # -- reading ---------------------------------------------------------------
    def path(self, name):
        """The model's folder; for a read-only store that cannot put back what a writer killed
        between its two renames left aside (a read-write open does), the version set aside."""
        final = self.root / _key(name)
        if self.read_only and not final.exists():
            aside = self._aside().get(_key(name))
            if aside is not None:
                return aside
        return final

    def _aside(self):
        """{model key: its complete folder in .trash/}: what a crashed overwrite set aside."""
        if not self._trash.is_dir():
            return {}
        return {_set_aside_key(old): old for old in sorted(self._trash.iterdir()) if (old / MANIFEST).is_file()}

    def exists(self, name):
        """Whether `name` is a model of the store: its folder, with its manifest or (a broken
        model, which SHOW MODELS lists and manifest() names) without."""
        folder = self.path(name)
        return (folder / MANIFEST).is_file() or folder.is_dir()

    def manifest(self, name):
        path = self.path(name) / MANIFEST
        for attempt in range(20):
            try:
                text = path.read_text()
                break
            except FileNotFoundError:
                # Another process overwriting the model has moved the old one aside and is about
                # to move the new one in (two renames): a reader waits for it, not miss the model.
                if attempt < 19 and any(self._trash.glob(f"{_key(name)}--*")):
                    time.sleep(0.01)
                    continue
                if path.parent.is_dir():  # its folder without its manifest: broken, not missing
                    raise StoreError(f"model '{name}': its manifest {path} is missing; DROP MODEL {name} and rebuild "
                                     "it", path=str(path)) from None
                raise self.missing(name) from None
            except OSError as exc:
                raise StoreError(f"model '{name}': cannot read {path}: {exc}; drop and rebuild the model") from exc
        try:
            manifest = _checked(json.loads(text), self.required, self.types)
        except ValueError as exc:
            raise StoreError(f"model '{name}': cannot read {path}: {exc}; drop and rebuild the model") from exc
        return _named(manifest, _key(name))

    def load(self, name):
        """(manifest, state_dict); the weights' checksum is verified first.

        The bytes checked are the bytes loaded. A writer may swap in a new version while a
        reader reads (readers take no lock): a checksum mismatch or a vanished file with a
        changed manifest is that, and the read starts again; with the same manifest it is
        a corrupt file."""
        from safetensors.torch import load as load_bytes

        for attempt in range(5):
            manifest = self.manifest(name)
            weights = self.path(name) / WEIGHTS
            try:
                data = weights.read_bytes()
            except FileNotFoundError:
                data = None
            if data is not None and hashlib.sha256(data).hexdigest() == manifest.get("weights_sha256"):
                try:
                    return manifest, load_bytes(data)
                except Exception as exc:  # a file that checks out but is no safetensors file
                    raise StoreError(f"model '{name}': cannot read weights file {weights}: {exc}; "
                                     "drop and rebuild the model") from exc
            if self._manifest_or_none(name) == manifest:
                break  # nothing moved: the file itself is bad
            time.sleep(0.05 * (attempt + 1))
        if data is None:
            raise StoreError(f"model '{name}': weights file {weights} is missing; drop and rebuild the model")
        raise StoreError(
            f"model '{name}': weights file {weights} is corrupt (checksum mismatch); "
            "drop and rebuild the model"
        )

    def _manifest_or_none(self, name):
        try:
            return self.manifest(name)
        except (CatalogError, StoreError):
            return None

    def missing(self, name):
        """The error for a model `name` that does not exist, naming the closest that do."""
        gone = "" if self.root.exists() else (
            f"; there is no models folder {self.root} (no model was built here yet; a database file moved or "
            "copied without the folder beside it left its models there: move that folder beside it)")
        return CatalogError(f"model '{name}' does not exist{self.did_you_mean(name)} (SHOW MODELS lists the models)"
                            + gone)

    def did_you_mean(self, name):
        """'; did you mean a, b?' for the models whose names are close to `name`, or ''."""
        named = [n for n in self._folders() if _nameable(n)]  # (not 'Upper': no statement can name it)
        close = difflib.get_close_matches(str(name).lower(), [*self.also_named, *named], n=3, cutoff=0.6)
        return f"; did you mean {', '.join(close)}?" if close else ""

    def _folders(self):
        """{name: folder} of the models' folders (not .tmp/ and .trash/)."""
        if not self.root.is_dir():
            return {}
        return {c.name: c for c in self.root.iterdir() if not c.name.startswith(".") and c.is_dir()}

    def list(self):
        """Every model's manifest, named as the model answers to (its folder's name: a folder
        copied under another name is that model); a model whose manifest is missing or cannot be
        read is listed as {"name": folder, "broken": reason}, so that it can be seen and dropped."""
        out, folders = [], self._folders()
        if self.read_only:  # (see path(): a version set aside by a crashed overwrite, under its own name)
            folders = {**self._aside(), **folders}
        for name, folder in sorted(folders.items()):
            if not _nameable(name):  # (a folder copied or renamed by hand)
                lower = name.lower() if _NAME.fullmatch(name) else "a name of letters, digits and underscores"
                out.append({"name": name, "broken": f"its folder's name is no model's (a model's folder is its name in "
                                                    f"lowercase: no statement can name this one); rename the "
                                                    f"folder {folder} to {lower}"})
                continue
            if name in self.also_named:  # (a folder copied by hand under a built-in's name: the built-in answers)
                out.append({"name": name, "broken": f"its folder has the name of a built-in model, which answers to "
                                                    f"it; rename the folder {folder} to another model name"})
                continue
            try:
                manifest = _checked(json.loads((folder / MANIFEST).read_text()), self.required, self.types)
            except FileNotFoundError:
                out.append({"name": name, "broken": f"{MANIFEST} is missing; DROP MODEL {name} and rebuild it"})
                continue
            except (OSError, ValueError) as exc:
                out.append({"name": name, "broken": f"{MANIFEST} cannot be read ({exc}); "
                                                    f"DROP MODEL {name} and rebuild it"})
                continue
            out.append(_named(manifest, name))
        return out

    # -- writing ---------------------------------------------------------------
    def load_rows(self, name, manifest=None):
        """The training rows a model keeps (ROWS: numpy arrays), or None when it keeps none.
        `manifest`: by default the model's; give the one load() returned, so the rows are that
        version's. A rows file that is missing or does not match it is a StoreError: FIT MODEL
        would otherwise refit on the new rows alone, losing the earlier ones without a word. Read
        as numpy: the embeddings are kept as uint16 (bf16's upper halves), which torch before 2.3
        cannot load."""
        from safetensors.numpy import load as load_bytes

        manifest = manifest if manifest is not None else self.manifest(name)
        if not manifest.get("rows_sha256"):
            return None
        path = self.path(name) / ROWS
        why = None
        try:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != manifest["rows_sha256"]:
                why = "its checksum does not match the manifest's"
            else:
                return load_bytes(data)
        except OSError as exc:
            why = exc.strerror or str(exc)
        except Exception as exc:  # noqa: BLE001  (safetensors' own errors)
            why = f"it cannot be read ({exc})"
        raise StoreError(f"model '{name}' keeps its training rows in {path}, which is damaged ({why}): refitting "
                         "on the new rows alone would lose the earlier ones; rebuild the model (BUILD MODEL ... "
                         "OPTIONS (overwrite=true)) or BUILD a new one on all the rows", path=str(path))

    def save(self, name, state_dict, manifest, overwrite=False, rows=None):
        """Write a complete model, then swap it in; returns the manifest as stored.
        `rows`: tensors kept beside the weights (ROWS), read back by load_rows. Tensors are torch
        tensors or numpy arrays (a linear BUILD from cached embeddings runs without torch)."""
        key = _key(name)
        self.check_writable(f"save model '{name}'")
        with self._locked():
            final = self.root / key
            if (final / MANIFEST).exists() and not overwrite:
                raise CatalogError(
                    f"model '{name}' already exists; use OPTIONS (overwrite=true) or DROP MODEL {name}"
                )
            self._tmp.mkdir(parents=True, exist_ok=True)
            staging = self._tmp / f"{key}--{uuid.uuid4().hex}"
            staging.mkdir()
            old = None
            try:
                _save_tensors(state_dict, staging / WEIGHTS)
                with open(staging / WEIGHTS, "rb+") as f:
                    os.fsync(f.fileno())  # on disk before the rename makes it the model
                manifest = dict(manifest, name=name, format_version=FORMAT_VERSION,
                                weights_sha256=file_sha256(staging / WEIGHTS))
                if rows:
                    _save_tensors(rows, staging / ROWS)
                    manifest["rows_sha256"] = file_sha256(staging / ROWS)
                with open(staging / MANIFEST, "w") as f:
                    json.dump(manifest, f, indent=2, default=str)
                    f.flush()
                    os.fsync(f.fileno())
                # safetensors writes 0600 files: the mode this process gives its files (the manifest's),
                # so that another account that reads the database reads its models too
                mode = os.stat(staging / MANIFEST).st_mode & 0o777
                for tensors in (WEIGHTS, ROWS):
                    if (staging / tensors).exists():
                        os.chmod(staging / tensors, mode)
                _fsync_dir(staging)
                with signals_held() as held:
                    if final.exists():
                        self._trash.mkdir(parents=True, exist_ok=True)
                        old = self._trash / f"{key}--{uuid.uuid4().hex}"
                        os.rename(final, old)
                    os.rename(staging, final)
                    _fsync_dir(self.root)
                    undone = bool(held)
                    if undone:  # Ctrl-C or SIGTERM during the swap (heard as the block ends): undo it, so
                        # that the statement it stops has changed nothing, as its message says
                        os.rename(final, staging)
                        if old is not None:
                            os.rename(old, final)
                            old = None
                        _fsync_dir(self.root)
                if undone:  # (a handler that only took note of the signal: the save is undone all the same)
                    raise KeyboardInterrupt
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            except BaseException as exc:  # an error or Ctrl-C: the previous model stays, or comes back
                if old is not None and not final.exists():
                    with contextlib.suppress(OSError):
                        os.rename(old, final)
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError":  # (a full disk)
                    raise StoreError(f"model '{name}' could not be written in {self.root} ({exc}); nothing was "
                                     f"saved{', the previous version is kept' if overwrite else ''}",
                                     path=str(self.root)) from exc
                raise
        return manifest

    def drop(self, name, if_exists=False):
        key = _key(name)
        self.check_writable(f"drop model '{name}'")
        with self._locked():
            final = self.root / key
            if not (final / MANIFEST).exists() and not final.is_dir():  # (a folder without one: a broken model)
                if if_exists:
                    return False
                raise self.missing(name)
            self._tmp.mkdir(parents=True, exist_ok=True)
            doomed = self._tmp / f"{key}--{uuid.uuid4().hex}"
            # Rename first so the model vanishes at once; .tmp/ is never restored from.
            with signals_held() as held:
                os.rename(final, doomed)
                undone = bool(held)
                if undone:  # Ctrl-C or SIGTERM during it: the model stays and the statement stops
                    os.rename(doomed, final)
            if undone:  # (a handler that only took note of the signal: the model stays all the same)
                raise KeyboardInterrupt
            shutil.rmtree(doomed, ignore_errors=True)
        return True
