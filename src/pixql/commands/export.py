"""EXPORT MODEL name TO 'file.onnx' [OPTIONS (...)]: the network as ONNX, its preprocessing beside it."""

from pathlib import Path

from pixql import options as opt
from pixql.commands.common import frame_result
from pixql.errors import CatalogError

OPTIONS = {
    # ONNX opset; None = the exporter's default. 11 is the first in which timm's 'SAME' padding
    # (computed sizes) exports; 23 the last torch's exporters write
    "opset": opt.integer(None, low=11, high=23),
    "overwrite": opt.flag(False),
}


def run(engine, statement):
    from pixql.ml.export import export_onnx, sidecar_path

    resolved, _ = opt.resolve("EXPORT MODEL", statement.options, OPTIONS)
    path = Path(statement.path).expanduser().absolute()
    if not statement.path.strip() or path.is_dir():
        raise CatalogError(f"EXPORT MODEL: {statement.path!r} is a folder, not a file to write: "
                           "name the file, e.g. TO 'model.onnx'", path=str(path))
    if path.suffix.lower() != ".onnx":  # (an ONNX file under another format's name misleads what opens it)
        raise CatalogError(f"EXPORT MODEL writes ONNX: name the file {path.stem or 'model'}.onnx, not "
                           f"{path.name}", path=str(path))
    sidecar = Path(sidecar_path(path))
    if sidecar.is_dir():  # (overwrite=true would not replace a folder either)
        raise CatalogError(f"EXPORT MODEL: {sidecar}, where the preprocessing beside {path.name} is written, is a "
                           "folder: move it away, or name the ONNX file otherwise", path=str(sidecar))
    for target in (path, sidecar):
        if target.exists() and not resolved["overwrite"]:
            raise CatalogError(f"{target} already exists; use OPTIONS (overwrite=true) to replace it",
                               path=str(target))
    if engine.catalog.names_a_base(statement.name):  # (else: "model ... does not exist")
        raise CatalogError(f"'{statement.name}' is a base network, not a model: EXPORT MODEL writes a "
                           "model BUILD MODEL trained, or imagenet_classifier (EfficientNet_Lite0's ImageNet "
                           "classifier)")
    network, state, classes, preprocessing, task = engine.catalog.parts(statement.name)
    written = export_onnx(network, state, classes, preprocessing, path, task=task, opset=resolved["opset"],
                          regions=engine.catalog.manifest(statement.name).get("regions"))
    return frame_result(statement, {
        "model": [statement.name], "path": [written["path"]], "preprocessing": [written["sidecar"]],
        "task": [written["task"]], "classes": [len(classes)], "input_size": [list(written["input_shape"][1:])],
        "opset": [written["opset"]], "bytes": [written["bytes"]]})

