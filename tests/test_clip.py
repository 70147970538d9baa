"""CLIP through open_clip's real loading code, with a tiny randomly initialised model the test
builds and saves (no installed package ships CLIP weights): shapes, ranking plumbing, zero-shot
PREDICT and the messages; not accuracy."""

import json

import numpy as np
import pytest

from pixql.errors import CatalogError, OptionError, WeightsUnavailableError

open_clip = pytest.importorskip("open_clip", reason="CLIP needs the clip extra: pip install pixql[clip]")
torch = pytest.importorskip("torch")

TINY = "TinyCLIP-pixqltest"
CONFIG = {"embed_dim": 16,
          "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(open_clip model, path of its saved weights) of a tiny CLIP registered with open_clip."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny_clip")
    (folder / f"{TINY}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder / f"{TINY}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY).eval()
    weights = folder / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return model, weights


def _by_open_clip(model, paths, texts):
    """Unit image and text vectors computed by open_clip itself (its own preprocessing)."""
    from PIL import Image

    preprocess = open_clip.image_transform(model.visual.image_size, is_train=False,
                                           mean=model.visual.preprocess_cfg["mean"],
                                           std=model.visual.preprocess_cfg["std"])
    with torch.no_grad():
        images = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        img = model.encode_image(images)
        txt = model.encode_text(open_clip.get_tokenizer(TINY)(texts))
    return (torch.nn.functional.normalize(img, dim=1).numpy(), torch.nn.functional.normalize(txt, dim=1).numpy())


def test_convert_and_text_search_with_clip(colors_db, tiny_clip, fp32_cpu):
    model, weights = tiny_clip
    db = colors_db
    using = f'"clip:{TINY}" OPTIONS (weights=\'{weights}\''
    frame = db.sql(f"CONVERT USING {using}) AS SELECT * FROM colors ORDER BY image").df()
    vectors = np.stack(frame.embedding.map(np.asarray))
    assert vectors.shape == (24, CONFIG["embed_dim"])
    img, txt = _by_open_clip(model, list(frame.image), ["a red square"])
    assert np.abs(vectors - img).max() < 1e-4  # pixql's loader gives open_clip's vectors

    found = db.sql(f"SEARCH IMAGE USING {using}, search_by='text', search_input='a red square', top_k=5) "
                   "AS SELECT * FROM colors").df()
    expected = img @ txt[0]
    best = np.argsort(-expected)[:5]
    assert list(found.image) == [frame.image[i] for i in best]
    assert np.allclose(found.similarity, expected[best], atol=1e-4)


def test_zero_shot_predict_with_clip(colors_db, tiny_clip, fp32_cpu):
    model, weights = tiny_clip
    db = colors_db
    labels = ["red", "green", "blue"]
    out = db.sql(f"PREDICT USING \"clip:{TINY}\" OPTIONS (weights='{weights}', labels='red|green|blue', "
                 "probabilities=true) AS SELECT * FROM colors ORDER BY image").df()
    assert set(out.predicted) <= set(labels)
    img, txt = _by_open_clip(model, list(out.image), [f"a photo of a {label}." for label in labels])
    logits = model.logit_scale.exp().item() * img @ txt.T
    expected = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    assert [labels[i] for i in expected.argmax(axis=1)] == list(out.predicted)
    assert np.allclose(out.score, expected.max(axis=1), atol=1e-4)


def test_clip_messages(colors_db, tiny_clip, tmp_path):
    _, weights = tiny_clip
    db = colors_db
    with pytest.raises(WeightsUnavailableError, match="pixql downloads nothing.*OPTIONS \\(weights="):
        db.sql("CONVERT USING clip AS SELECT * FROM colors")
    with pytest.raises(OptionError, match="at least two labels"):
        db.sql(f"PREDICT USING \"clip:{TINY}\" OPTIONS (weights='{weights}') AS SELECT * FROM colors")
    with pytest.raises(OptionError, match="labels=.*is for a CLIP model"):
        db.sql("PREDICT USING cm OPTIONS (labels='a|b') AS SELECT * FROM colors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"no weights here")
    with pytest.raises(WeightsUnavailableError, match="cannot load CLIP"):
        db.sql(f"CONVERT USING \"clip:{TINY}\" OPTIONS (weights='{junk}') AS SELECT * FROM colors")
    # another network's file: one short line saying so, not every key of the model (17 KB of them)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(WeightsUnavailableError, match=f"its tensors are not {TINY}'s; give the checkpoint") as info:
        db.sql(f"CONVERT USING \"clip:{TINY}\" OPTIONS (weights='{other}') AS SELECT * FROM colors")
    assert len(str(info.value)) < 600
    with pytest.raises(WeightsUnavailableError, match="is a folder: give the checkpoint file in it"):
        db.sql(f"CONVERT USING \"clip:{TINY}\" OPTIONS (weights='{tmp_path}') AS SELECT * FROM colors")
    # a whole pickled model: said plainly (torch's own text, in terminal colours, advised unpickling it)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pth")
    with pytest.raises(WeightsUnavailableError, match="a whole pickled model\\?\\), and pixql unpickles no code") as info:
        db.sql(f"CONVERT USING \"clip:{TINY}\" OPTIONS (weights='{tmp_path / 'whole.pth'}') AS SELECT * FROM colors")
    assert "\x1b" not in str(info.value) and "weights_only=False" not in str(info.value)
    with pytest.raises(WeightsUnavailableError, match="Offline without CLIP: keyword search"):
        db.sql("CONVERT USING clip AS SELECT * FROM colors")
    with pytest.raises(CatalogError, match="no CLIP model 'Nope'"):
        db.sql("CONVERT USING clip:Nope AS SELECT * FROM colors")


def test_a_hugging_face_tokenizer_comes_from_the_cache_only(colors_db, tiny_clip, tmp_path, monkeypatch):
    """SigLIP's and other models' text tokenizers are Hugging Face's: open_clip fetched one from the
    network (38 connection attempts offline, then a traceback), even with a local weights file.
    Photos need none; text says what is missing, and nothing connects."""
    import socket

    _, weights = tiny_clip
    name = f"{TINY}-hf"
    (tmp_path / f"{name}.json").write_text(json.dumps(
        {**CONFIG, "text_cfg": {**CONFIG["text_cfg"], "hf_tokenizer_name": "pixql-test/no-such-tokenizer"}}))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))

    def no_network(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    db = colors_db
    using = f'"clip:{name}" OPTIONS (weights=\'{weights}\''
    assert len(db.sql(f"CONVERT USING {using}) AS SELECT * FROM colors").df()) == 24
    with pytest.raises(WeightsUnavailableError, match=f"CLIP {name}'s text tokenizer \\(pixql-test/no-such-tokenizer\\) "
                                                      "is not in the local Hugging Face cache, and pixql downloads nothing.*Photos need no tokenizer"):
        db.sql(f"SEARCH IMAGE USING {using}, search_by='text', search_input='red') AS SELECT * FROM colors")


def test_a_tables_clip_vectors_are_known_by_the_weights_bytes_not_their_path(colors_db, tiny_clip, tmp_path):
    """SEARCH IMAGE refused a CONVERTed column for the same weights file under another path, and
    searched it with a file rewritten in place (other weights: meaningless ranks)."""
    import shutil

    from safetensors.torch import save_file

    _, weights = tiny_clip
    db = colors_db
    db.sql(f"CREATE TABLE ce AS CONVERT USING \"clip:{TINY}\" OPTIONS (weights='{weights}') AS SELECT * FROM colors")
    copy = tmp_path / "copy.safetensors"
    shutil.copy(weights, copy)
    search = ("SEARCH IMAGE USING \"clip:{}\" OPTIONS (weights='{}', search_by='text', search_input='red', top_k=3) "
              "AS SELECT image, embedding FROM ce")
    assert len(db.sql(search.format(TINY.lower(), copy)).df()) == 3  # another path, the name in another case
    torch.manual_seed(1)
    other = open_clip.create_model(TINY)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(copy))
    with pytest.raises(OptionError, match="two networks' vectors are not alike"):
        db.sql(search.format(TINY, copy))


def test_clip_names_labels_and_functions_say_what_they_need(colors_db, tiny_clip):
    _, weights = tiny_clip
    db = colors_db
    # a model with no published weights, and a tag open_clip does not know: no advice that cannot work
    with pytest.raises(WeightsUnavailableError, match=f"open_clip publishes no weights for {TINY}: give a checkpoint"):
        db.sql(f"CONVERT USING \"clip:{TINY}\" AS SELECT * FROM colors")
    with pytest.raises(WeightsUnavailableError, match="no weights tag 'nosuchtag' for ViT-B-32 \\(its tags: openai, "):
        db.sql("CONVERT USING \"clip:ViT-B-32:nosuchtag\" AS SELECT * FROM colors")
    # labels that differ only in case are one prompt to CLIP: every score was 0.5
    with pytest.raises(OptionError, match="names a label twice \\(in any case"):
        db.sql(f"PREDICT USING \"clip:{TINY}\" OPTIONS (weights='{weights}', labels='cat|Cat') AS SELECT * FROM colors")
    with pytest.raises(CatalogError, match="predict\\(\\) takes a model with classes; CLIP classifies into labels"):
        db.sql("SELECT predict('clip', image) FROM colors").fetchall()
