"""A saved network as an ONNX file, and that file run with ONNX Runtime.

`export_onnx(network, state_dict, classes, preprocessing, path)` writes two files:

    <path>                        the graph: float32 NCHW images in, class probabilities out
    <path less .onnx>.preprocessing.json
                                  how to feed it, as pixql does (`sidecar_path`): timm's eval
                                  transform for these values gives pixql's pixels to within a grey
                                  level or two (pixql resizes in torch, in uint8: data.ResizeCrop)

The graph's input `image` is a batch [N, 3, H, W] (N free) already resized, cropped and
normalised as `preprocessing` says; its output `probabilities` is [N, n_classes]: softmax,
or for task 'multi_label' an independent sigmoid per class. The batch norms are folded into
the convolutions first, as `Classifier` does, so ONNX Runtime computes what PREDICT computes.
The same JSON is also stored in the ONNX file's metadata (key 'pixql'), so the file alone
is enough when the sidecar gets lost.

Exporter: torch's TorchScript-based exporter (`dynamo=False`). It needs no package beyond
torch (onnx is used here to check the file and write its metadata), while the default
torch.export-based one of torch >= 2.9 also needs `onnxscript`. torch calls the TorchScript
exporter deprecated; should a later torch drop it or fail on a network, exporter='auto' falls
back to the dynamo exporter when onnxscript is installed.

`onnx_probabilities(path, paths)` decodes image files with pixql's own reader and eval
transform (read_image + eval_transform, from the sidecar or the embedded metadata) and runs
the file on ONNX Runtime's CPU provider.
"""

import contextlib
import glob
import json
import os
import time
import uuid
import warnings

import numpy as np
import torch

from pixql.errors import DataError, TrainingError, signals_held
from pixql.ml.infer import inference_network
from pixql.tasks import as_task

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
SIDECAR_SUFFIX = ".preprocessing.json"
METADATA_KEY = "pixql"
FORMAT = "pixql-onnx"
FORMAT_VERSION = 1
EXPORTERS = ("auto", "torchscript", "dynamo")
_TRACE_BATCH = 2  # traced with 2 images, so that nothing specialises on a batch of one
_VERIFY_TOLERANCE = 1e-4


def sidecar_path(path):
    """The preprocessing JSON written beside an ONNX file: `model.onnx` ->
    `model.preprocessing.json` (a path not ending in .onnx keeps its whole name)."""
    path = os.fspath(path)
    base = path[:-len(".onnx")] if path.lower().endswith(".onnx") else path
    return base + SIDECAR_SUFFIX


def export_onnx(network, state_dict, classes, preprocessing, path, task="classification", opset=None, *,
                exporter="auto", verify=True, regions=None):
    """Write the network as an ONNX file at `path` and its preprocessing JSON beside it.

    network, state_dict, classes, preprocessing, task: as a saved model's manifest and
    weights hold them (ModelStore.load). opset: the ONNX opset to target (None: the
    exporter's default; the one written is in the result). exporter: 'auto' (TorchScript,
    else dynamo when onnxscript is installed), 'torchscript' or 'dynamo'. verify: when
    onnxruntime is installed, run the written file on a random batch and require its
    probabilities to match torch's within 1e-4. regions: the region options the model was
    trained with (box_col, box_format, padding, background, ...; a manifest's `regions`), written
    into the JSON so that another runtime can cut its inputs the same way.

    Returns {'path', 'sidecar', 'input_name', 'output_name', 'input_shape', 'classes',
    'task', 'opset', 'exporter', 'bytes', 'max_abs_diff'} (max_abs_diff None unverified).
    Raises DataError for a path that cannot be written, StoreError for weights that do not
    fit the network, TrainingError when the export fails.
    """
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise DataError(f"Cannot write the ONNX file {path}: its folder {folder} does not exist "
                        "(create it first)", path=path)
    if os.path.isdir(path):
        raise DataError(f"Cannot write the ONNX file {path}: that path is a folder; give a file name "
                        "such as model.onnx", path=path)
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    onnx = _import("onnx", "export a model to ONNX")

    task = as_task(task)
    classes = [str(c) for c in classes]
    pre = _checked_preprocessing(preprocessing, path)
    model = inference_network(dict(network), state_dict, classes)  # exactly what PREDICT runs
    wrapped = _Probabilities(model, task).eval()
    shape = (_TRACE_BATCH, *[int(s) for s in pre["input_size"]])
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    try:
        with torch.no_grad():
            expected = wrapped(example).numpy()
    except Exception as e:  # before any exporter: the network itself cannot take such images
        raise TrainingError(f"ONNX export of {path} failed: the {network.get('arch')} network cannot run on "
                            f"images of input_size {list(pre['input_size'])} ({type(e).__name__}: {e}); "
                            "the preprocessing does not fit the network") from e

    sidecar = sidecar_path(path)
    for name in (path, sidecar):
        _sweep_stale(folder, os.path.basename(name))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            open(tmp, "xb").close()  # the folder takes a file: known before the seconds of exporting
        except OSError as e:  # (else the exporter's error named the temporary file and hinted at onnxscript)
            raise DataError(f"Cannot write the ONNX file {path}: its folder {folder} does not take new files "
                            f"({e.strerror or e})", path=path) from None
        used = _export(wrapped, example, tmp, opset, exporter, path)
        try:
            proto = onnx.load(tmp)
            onnx.checker.check_model(proto)
        except Exception as e:
            raise TrainingError(f"The {used} exporter wrote an invalid ONNX graph for {path}: {e}") from e
        written_opset = next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
        config = _config(network, classes, pre, task, written_opset, used, regions)
        _set_metadata(proto, {METADATA_KEY: json.dumps(config)})
        onnx.save(proto, tmp)
        max_diff = _verify(expected, example, tmp, path) if verify else None
        # The pair replaced together: a Ctrl-C between the two renames left one export's
        # preprocessing beside another's graph (other classes); kill -9 there, read_onnx_config
        # tells by the export id they share.
        with _json_written(sidecar, config) as json_tmp, signals_held():
            os.replace(tmp, path)
            os.replace(json_tmp, sidecar)
    except OSError as e:
        raise DataError(f"Cannot write the ONNX file {path}: {e}", path=path) from e
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)
    return {
        "path": path,
        "sidecar": sidecar,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_shape": ["batch", *config["input_size"]],
        "classes": len(classes),
        "task": config["task"],
        "opset": written_opset,
        "exporter": used,
        "bytes": os.path.getsize(path),
        "max_abs_diff": max_diff,
    }


def read_onnx_config(path, session=None):
    """The pixql JSON of an exported file: its sidecar if present, else the copy stored in the
    file's metadata. Raises DataError when neither is there. `session`: one of ONNX Runtime's on
    the file already (its metadata is read from it)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"ONNX file not found: {path}", path=path)
    sidecar = sidecar_path(path)
    meta = (session or _session(path)).get_modelmeta().custom_metadata_map
    try:
        inside = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None
    except ValueError:
        inside = None
    inside = inside if isinstance(inside, dict) else None
    if os.path.isfile(sidecar):
        try:
            with open(sidecar, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise DataError(f"The preprocessing file {sidecar} of {path} cannot be read ({e})", path=sidecar) from e
        # (an export killed between its two renames: its id in the file, the earlier sidecar's, or none
        # where pixql wrote it before ids; a sidecar edited by hand keeps its id)
        if isinstance(config, dict) and inside and inside.get("export_id") and \
                config.get("export_id") != inside.get("export_id"):
            raise DataError(f"The preprocessing file {sidecar} was written by another export than {path} (an export "
                            "stopped between writing the two?): export the model again, or remove the preprocessing "
                            "file to use the copy inside the ONNX file", path=sidecar)
        return config
    if inside is not None:
        return inside
    raise DataError(f"{path} has neither a preprocessing file ({os.path.basename(sidecar)}) nor pixql metadata: "
                    "give its preprocessing (input_size, mean, std, crop_pct, interpolation) explicitly", path=path)


def onnx_probabilities(path, paths, preprocessing=None, batch_size=32):
    """[n, n_classes] float32 probabilities of the ONNX file at `path` for the image files
    `paths`, in order, computed by ONNX Runtime on the CPU.

    Images are decoded and transformed as pixql does (read_image, then eval_transform of the
    preprocessing: `preprocessing` when given, else the sidecar JSON or the file's metadata).
    An unreadable image raises DataError naming it."""
    from pixql.ml.data import draft_size, eval_transform
    from pixql.ml.images import read_image

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"ONNX file not found: {path}", path=path)
    session = _session(path)
    pre = preprocessing if preprocessing is not None else read_onnx_config(path, session)
    pre = _checked_preprocessing(pre, path)
    input_name = session.get_inputs()[0].name
    output = session.get_outputs()[0]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        n_classes = output.shape[-1] if isinstance(output.shape[-1], int) else 0
        return np.zeros((0, n_classes), dtype=np.float32)
    transform = eval_transform(pre)
    draft = draft_size(pre)
    outs = []
    batch_size = max(1, int(batch_size))
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        x = np.stack([_prepared(transform, read_image(p, draft), p) for p in chunk]).astype(np.float32, copy=False)
        outs.append(session.run([output.name], {input_name: x})[0])
    return np.concatenate(outs).astype(np.float32, copy=False)


# -- helpers ------------------------------------------------------------------------------------

def _import(name, what):
    try:
        return __import__(name)
    except ImportError:
        raise TrainingError(f"To {what} pixql needs the Python package '{name}', which is not installed: "
                            f"pip install {name}") from None


def _prepared(transform, image, path):
    try:
        return transform(image).numpy()
    except Exception as e:  # a transform failing on an odd image: name the file, as PREDICT does
        raise DataError(f"Image could not be prepared ({type(e).__name__}: {e}): {path}", path=path) from e


def _checked_preprocessing(pre, path):
    if not isinstance(pre, dict):
        raise DataError(f"The preprocessing for {path} must be a dict (input_size, mean, std, crop_pct, "
                        f"interpolation), not {type(pre).__name__}", path=path)
    missing = [k for k in ("input_size", "mean", "std", "interpolation") if pre.get(k) is None]
    if missing:
        raise DataError(f"The preprocessing for {path} lacks {', '.join(missing)}", path=path)
    if len(pre["input_size"]) != 3:
        raise DataError(f"The preprocessing for {path} has input_size {pre['input_size']}, not [3, H, W]",
                        path=path)
    return pre


class _Probabilities(torch.nn.Module):
    """The network with its logits turned into probabilities, inside the graph."""

    def __init__(self, model, task):
        super().__init__()
        self.model = model
        self.task = task  # the task turns logits into probabilities (softmax, or a sigmoid per class)

    def forward(self, image):
        return self.task.probabilities(self.model(image))


def _sweep_stale(folder, name):
    """Remove what an export of `name` killed mid-way (kill -9: no `finally`) left in `folder`: its
    temporary files whose process is gone, or (written by another machine) a day old."""
    for leftover in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")):
        pid = os.path.basename(leftover)[len(name) + 2:].split("-", 1)[0]
        try:
            gone = time.time() - os.path.getmtime(leftover) > 86400
            if not gone and pid.isdigit() and int(pid) != os.getpid():
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    gone = True
                except PermissionError:  # (alive, another user's)
                    pass
            if gone:
                os.remove(leftover)
        except OSError:
            pass  # removed by another process meanwhile, or not ours to remove


def _export(wrapped, example, tmp, opset, exporter, path):
    """Run torch's exporter into `tmp`; returns the name of the exporter that worked."""
    if exporter == "dynamo":
        _export_dynamo(wrapped, example, tmp, opset, path)
        return "dynamo"
    try:
        _export_torchscript(wrapped, example, tmp, opset)
        return "torchscript"
    except Exception as e:
        first = e
    if exporter == "auto" and _has("onnxscript"):
        with contextlib.suppress(OSError):
            os.remove(tmp)
        try:
            _export_dynamo(wrapped, example, tmp, opset, path)
            return "dynamo"
        except TrainingError as e:
            raise TrainingError(f"{e}; the TorchScript exporter failed before it: "
                                f"{type(first).__name__}: {_without_graph(first)}") from first
    hint = ("" if exporter != "auto" else
            "; installing 'onnxscript' (pip install onnxscript) lets pixql try torch's dynamo exporter too")
    raise TrainingError(f"ONNX export of {path} failed (TorchScript exporter, opset {opset or 'default'}): "
                        f"{type(first).__name__}: {_without_graph(first)}{hint}") from first


def _export_torchscript(wrapped, example, tmp, opset):
    with warnings.catch_warnings(), torch.no_grad():
        # its own deprecation notice, and tracer warnings about shapes taken as constants:
        # the spatial size is fixed by the preprocessing, only the batch is free
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped, (example,), tmp, dynamo=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset, do_constant_folding=True, export_params=True,
        )


def _export_dynamo(wrapped, example, tmp, opset, path):
    if not _has("onnxscript"):
        raise TrainingError(f"ONNX export of {path} with torch's dynamo exporter needs the Python package "
                            "'onnxscript', which is not installed: pip install onnxscript")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped, (example,), dynamo=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                opset_version=opset, optimize=True, verbose=False,
            )
            program.save(tmp, external_data=False)
    except Exception as e:
        raise TrainingError(f"ONNX export of {path} failed (dynamo exporter, opset {opset or 'default'}): "
                            f"{type(e).__name__}: {_without_graph(e)}") from e


def _without_graph(error):
    """An exporter's message without the graph that torch appends (hundreds of lines): the lines
    before it, at most a few (the dynamo exporter's first says only which step failed)."""
    kept = []
    for line in str(error).strip().splitlines():
        if "graph(" in line or line.lstrip().startswith(("Torch IR graph", "%", "#")) or len(kept) == 4:
            break
        kept.append(line.strip())
    return " ".join(line for line in kept if line)


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _config(network, classes, pre, task, opset, exporter, regions=None):
    import pixql

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "layout": "NCHW",
        "dtype": "float32",
        "input_size": [int(s) for s in pre["input_size"]],
        "mean": [float(m) for m in pre["mean"]],
        "std": [float(s) for s in pre["std"]],
        "crop_pct": None if pre.get("crop_pct") is None else float(pre["crop_pct"]),
        "crop_mode": pre.get("crop_mode") or "center",
        "interpolation": pre["interpolation"],
        **_pixel_steps(pre, regions),
        "classes": list(classes),
        "export_id": uuid.uuid4().hex,  # the same in the file's metadata and its sidecar: a pair
        "task": task.name,
        "output": task.activation,
        "opset": opset,
        "exporter": exporter,
        "network": {k: v for k, v in dict(network).items() if isinstance(v, (str, int, float, bool))},
        "regions": dict(regions) if regions else None,  # how its training rows were cut from photos
        "torch_version": torch.__version__,
        "pixql_version": getattr(pixql, "__version__", None),
    }


def _pixel_steps(pre, regions=None):
    """What PREDICT does to a photo before the network, as fields a program outside pixql reads
    (`resize`: the shorter side's length, or [height, width] when squashed; `center_crop`
    [height, width]; `scale`: the factor to bring 8-bit pixels into [0, 1]) and in words (`steps`),
    both read from the eval transform of timm that pixql's follows (ml/data.eval_transform)."""
    from timm.data import create_transform

    fields, steps = {}, ["decode the file as RGB, turned upright by its EXIF orientation"]
    if regions:
        steps.append("cut out the row's region as `regions` says (its box, padding, mask and background)")
    for step in create_transform(input_size=tuple(pre["input_size"]), is_training=False,
                                 interpolation=pre["interpolation"], mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                                 crop_pct=pre.get("crop_pct"), crop_mode=pre.get("crop_mode") or "center").transforms:
        name = type(step).__name__
        if name == "Resize":
            size = step.size if isinstance(step.size, int) else list(step.size)
            mode = getattr(step.interpolation, "value", step.interpolation)
            fields["resize"] = {"size": size, "interpolation": mode, "antialias": bool(step.antialias)}
            steps.append(f"resize so that the shorter side is {size} px and the longer int({size} * longer / shorter) "
                         f"px, truncated ({mode}, antialiased)" if isinstance(size, int)
                         else f"resize to {size[1]}x{size[0]} px, width x height ({mode}, antialiased)")
        elif name == "CenterCrop":
            fields["center_crop"] = list(step.size)
            steps.append(f"cut out the centre {step.size[1]}x{step.size[0]} px (width x height): left = "
                         f"round((width - {step.size[1]}) / 2), top = round((height - {step.size[0]}) / 2), "
                         "a half rounded to even (Python's round)")
        elif name in ("ToTensor", "MaybeToTensor"):
            fields["scale"] = 1 / 255
            steps.append("the pixels as float32 divided by 255 (into [0, 1]), channels first")
        elif name == "Normalize":
            steps.append("per channel (R, G, B): subtract mean, divide by std")
        else:  # (a transform timm adds in a later version: named, for whoever reads the file)
            steps.append(name)
    steps.append("stack the photos into a batch: NCHW float32, the input named input_name")
    return {**fields, "steps": steps}


def _set_metadata(proto, entries):
    for key, value in entries.items():
        for prop in list(proto.metadata_props):
            if prop.key == key:
                proto.metadata_props.remove(prop)
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


@contextlib.contextmanager
def _json_written(path, data):
    """The path of a temporary file beside `path` holding `data` as JSON, for the caller to rename
    into place; removed if it does not."""
    folder, name = os.path.split(path)  # (named as the ONNX file's temporary one: _sweep_stale finds both)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def _session(path, threads=None):
    """An ONNX Runtime session on the CPU; `threads`: its operators' threads (None: ORT's default,
    one per core)."""
    ort = _import("onnxruntime", "run an ONNX model")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise DataError(f"Not a valid ONNX model ({type(e).__name__}: {e}): {path}", path=os.fspath(path)) from e


def _verify(expected, example, tmp, path):
    """Largest |ONNX Runtime - torch| probability on the traced batch; None without onnxruntime."""
    if not _has("onnxruntime"):
        return None
    got = _session(tmp).run([OUTPUT_NAME], {INPUT_NAME: example.numpy()})[0]
    if got.shape != expected.shape:
        raise TrainingError(f"The ONNX graph for {path} gives outputs of shape {got.shape}, torch {expected.shape}")
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= _VERIFY_TOLERANCE:
        raise TrainingError(f"The ONNX graph for {path} does not compute what the network does: probabilities "
                            f"differ by up to {diff:.2g} on a test batch")
    return diff
