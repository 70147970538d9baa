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
    if not folder and os.path.isfile(os.path.expanduser(source)):
        raise WeightsUnavailableError(f"{what} weights {source} is a file: give the folder save_pretrained wrote "
                                      "(config.json, model.safetensors, and the processor's "
                                      "preprocessor_config.json or processor_config.json)")
    if not folder and (os.sep in source and not _looks_like_hub_id(source)):
        raise WeightsUnavailableError(f"{what} weights folder not found: {source}")
    source = os.path.expanduser(source) if folder else source
    model_cls = getattr(transformers, model_class)
    processor_cls = getattr(transformers, processor_class)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its "Loading weights" bars and notes are not ours to show
    transformers.utils.logging.disable_progress_bar()
    try:
        model, info = model_cls.from_pretrained(source, local_files_only=True, output_loading_info=True)
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
    except Exception as exc:  # noqa: BLE001  (another model's files: transformers' TypeError, RuntimeError, ...)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise WeightsUnavailableError(f"cannot load {what} from {source}: {reason}; give a folder that "
                                      f"{model_class}.save_pretrained and {processor_class}.save_pretrained wrote"
                                      ) from None
    finally:
        transformers.utils.logging.enable_progress_bar()
        transformers.logging.set_verbosity(verbosity)
    _refuse_another_model(model, processor, info, source, what, model_class, processor_class)
    return model.eval(), processor


def _refuse_another_model(model, processor, info, source, what, model_class, processor_class):
    """transformers builds a model of another's config, or with tensors missing, at random (a
    warning we silence): the answers would come from a random network. Refused, naming what."""
    expected = model.config_class.model_type
    problems = []
    if model.config.model_type != expected:
        problems.append(f"its config is a {model.config.model_type} model's, not {expected}'s")
    missing = list(info.get("missing_keys") or []) + [k for k, *_ in info.get("mismatched_keys") or []]
    if missing:
        problems.append(f"{len(missing)} of the network's tensors are missing or of other shapes "
                        f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    declared = _declared_processor(source)  # (the class asked for is built from any folder's settings)
    if declared and not declared.lower().startswith(expected.replace("_", "")):
        problems.append(f"its preprocessor is a {declared}")
    if problems:
        raise WeightsUnavailableError(f"{source} does not hold {what} weights: {'; '.join(problems)}. Give a folder "
                                      f"that {model_class}.save_pretrained and {processor_class}.save_pretrained "
                                      "wrote")


def _declared_processor(source):
    """The image processor class a save_pretrained folder names, or None: in its
    preprocessor_config.json, or (a processor's save_pretrained in transformers 5) under
    "image_processor" in its processor_config.json."""
    import json

    for name, part in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        try:
            with open(os.path.join(source, name)) as f:
                config = json.load(f)
        except (OSError, ValueError):
            continue
        config = config.get(part) if part else config
        if isinstance(config, dict) and (config.get("image_processor_type") or config.get("feature_extractor_type")):
            return config.get("image_processor_type") or config.get("feature_extractor_type")
    return None


def _looks_like_hub_id(source):
    return source.count("/") == 1 and not source.startswith((".", "/", "~"))

