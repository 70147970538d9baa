"""Pretrained transformers models (SAM, YOLOS) from a local folder or the Hugging Face cache.

pixql downloads nothing: `from_pretrained(..., local_files_only=True)` reads a folder written by
`save_pretrained` (OPTIONS (weights='folder')) or a hub id already in the local cache; otherwise a
WeightsUnavailableError says how to provide the weights and what works offline instead.
"""

import os

from pixql.errors import WeightsUnavailableError


def transformers_module():
    try:
        import transformers
    except ImportError:
        raise WeightsUnavailableError(
            "this model needs the transformers package: pip install 'pixql[hub]'") from None
    return transformers


def load(model_class, processor_class, source, what, offline_alternative):
    """(model in eval mode, its processor) from `source`: a folder, or a hub id in the local cache.
    `what` names the model in messages; `offline_alternative` says what works without it."""
    transformers = transformers_module()
    folder = os.path.isdir(os.path.expanduser(source))
    if not folder and (os.sep in source and not _looks_like_hub_id(source)):
        raise WeightsUnavailableError(f"{what} weights folder not found: {source}")
    source = os.path.expanduser(source) if folder else source
    model_cls = getattr(transformers, model_class)
    processor_cls = getattr(transformers, processor_class)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its "Loading weights" bars and notes are not ours to show
    transformers.utils.logging.disable_progress_bar()
    try:
        model = model_cls.from_pretrained(source, local_files_only=True)
        processor = processor_cls.from_pretrained(source, local_files_only=True)
    except OSError as exc:
        if folder:
            raise WeightsUnavailableError(f"cannot load {what} from the folder {source}: {exc}") from None
        raise WeightsUnavailableError(
            f"{what} weights '{source}' are not in the local Hugging Face cache, and pixql downloads nothing. "
            f"To provide them: where there is internet run python -c \"import transformers; "
            f"transformers.{model_class}.from_pretrained('{source}'); "
            f"transformers.{processor_class}.from_pretrained('{source}')\" and copy the cache (HF_HOME, by "
            f"default ~/.cache/huggingface/hub) here, or save both with save_pretrained into a folder and "
            f"give OPTIONS (weights='folder'). Offline: {offline_alternative}") from None
    finally:
        transformers.utils.logging.enable_progress_bar()
        transformers.logging.set_verbosity(verbosity)
    return model.eval(), processor


def _looks_like_hub_id(source):
    return source.count("/") == 1 and not source.startswith((".", "/", "~"))

