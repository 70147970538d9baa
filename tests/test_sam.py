"""SEGMENT USING sam (transformers' SamModel), through the real loading code, with a tiny randomly
initialised SAM that the test builds and saves (no installed package ships SAM's weights)."""

import numpy as np
import pytest
from PIL import Image

from pixql.errors import OptionError, WeightsUnavailableError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory):
    """A folder holding a 64 px SamModel and its SamProcessor, as save_pretrained writes them."""
    import torch
    from transformers.models.sam.configuration_sam import (SamMaskDecoderConfig, SamPromptEncoderConfig,
                                                           SamVisionConfig)

    vision = SamVisionConfig(hidden_size=32, output_channels=16, num_hidden_layers=1, num_attention_heads=2,
                             image_size=64, patch_size=16, mlp_dim=64, global_attn_indexes=[0], window_size=2,
                             num_pos_feats=8)
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32,
                                   iou_head_hidden_dim=16)
    config = transformers.SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                                    mask_decoder_config=decoder.to_dict())
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_sam")
    transformers.SamModel(config).save_pretrained(folder)
    processor = transformers.SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                               mask_size={"longest_edge": 16},
                                               mask_pad_size={"height": 16, "width": 16})
    transformers.SamProcessor(image_processor=processor).save_pretrained(folder)
    return folder


@pytest.fixture
def photos(colors_db, tmp_path):
    """Two photos of different sizes, one with two boxes."""
    rng = np.random.default_rng(1)
    for name, (w, h) in (("a.png", (120, 90)), ("b.jpg", (80, 140))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    colors_db.sql(f"CREATE TABLE items AS SELECT '{tmp_path}/' || f AS image, box FROM (VALUES "
                  "('a.png', [10, 5, 70, 60]), ('a.png', [60, 30, 118, 88]), ('b.jpg', [5, 20, 75, 130])) v(f, box)")
    return colors_db


def test_segment_using_sam_gives_sams_mask_inside_each_box(photos, tiny_sam, tmp_path):
    db = photos
    out = db.sql(f"SEGMENT USING sam OPTIONS (box_col='box', weights='{tiny_sam}', out_dir='{tmp_path}/m') "
                 "AS SELECT * FROM items ORDER BY image, box[1]").df()
    assert list(out.columns) == ["image", "box", "mask", "mask_share"] and out["mask"].nunique() == 3
    model = transformers.SamModel.from_pretrained(tiny_sam).eval()
    processor = transformers.SamProcessor.from_pretrained(tiny_sam)
    import torch

    for image, box, path, share in zip(out.image, out.box, out["mask"], out.mask_share):
        rgb = np.array(Image.open(image).convert("RGB"))  # (writable, as torch wants)
        mask = np.asarray(Image.open(path)) > 127
        assert mask.shape == rgb.shape[:2]
        x1, y1, x2, y2 = (int(v) for v in box)
        assert not mask[:y1].any() and not mask[y2:].any() and not mask[:, :x1].any() and not mask[:, x2:].any()
        # the same box given to SAM directly: pixql's mask is SAM's, cut to the box
        inputs = processor(images=rgb, input_boxes=[[[float(v) for v in box]]], return_tensors="pt")
        with torch.inference_mode():
            pred = model(**{k: inputs[k] for k in ("pixel_values", "input_boxes")}, multimask_output=False)
        direct = processor.image_processor.post_process_masks(pred.pred_masks, inputs["original_sizes"],
                                                              inputs["reshaped_input_sizes"])[0][0, 0].numpy()
        assert np.array_equal(mask[y1:y2, x1:x2], direct[y1:y2, x1:x2])
        assert share == pytest.approx(mask[y1:y2, x1:x2].mean())
    again = db.sql(f"SEGMENT USING sam OPTIONS (box_col='box', weights='{tiny_sam}', out_dir='{tmp_path}/m') "
                   "AS SELECT * FROM items ORDER BY image, box[1]").df()
    assert list(again["mask"]) == list(out["mask"])  # written once, read back
    grabcut = db.sql(f"SEGMENT USING grabcut OPTIONS (box_col='box', out_dir='{tmp_path}/m') "
                     "AS SELECT * FROM items ORDER BY image, box[1]").df()
    assert not set(grabcut["mask"]) & set(out["mask"])  # each method's masks are its own files


def test_auto_segments_with_sam_when_its_weights_are_in_the_local_cache(photos, tiny_sam, tmp_path, monkeypatch):
    """SPEC: GrabCut offline, SAM when its weights are present. A SAM in the local Hugging Face
    cache (as facebook/sam-vit-base) is what SEGMENT without USING runs, and says so; without it
    the offline methods, without a word."""
    import shutil

    from huggingface_hub import constants

    db = photos
    query = "AS SELECT * FROM items ORDER BY image, box[1]"
    offline = db.sql(f"SEGMENT OPTIONS (box_col='box', out_dir='{tmp_path}/a') {query}")
    assert not any("SAM" in m for m in offline.messages)
    repo = tmp_path / "hf" / "models--facebook--sam-vit-base"
    shutil.copytree(tiny_sam, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    chosen = db.sql(f"SEGMENT OPTIONS (box_col='box', out_dir='{tmp_path}/a') {query}")
    assert any("auto segmented with SAM (facebook/sam-vit-base, found in the local Hugging Face cache)" in m
               for m in chosen.messages)
    sam = db.sql(f"SEGMENT USING sam OPTIONS (box_col='box', weights='{tiny_sam}', out_dir='{tmp_path}/s') {query}")
    for a, b in zip(chosen.df()["mask"], sam.df()["mask"]):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert list(chosen.df().mask_share) == list(sam.df().mask_share)
    assert list(chosen.df().mask_share) != list(offline.df().mask_share)


def test_sam_without_its_weights_says_how_to_provide_them(photos, tmp_path):
    db = photos
    with pytest.raises(WeightsUnavailableError, match="pixql-tests/no-such-sam.*local Hugging Face cache.*grabcut"):
        db.sql("SEGMENT USING sam:pixql-tests/no-such-sam OPTIONS (box_col='box') AS SELECT * FROM items")
    with pytest.raises(WeightsUnavailableError, match="not found: .*missing_folder"):
        db.sql(f"SEGMENT USING sam OPTIONS (box_col='box', weights='{tmp_path}/missing_folder') AS SELECT * FROM items")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsUnavailableError, match="cannot load SAM from the folder"):
        db.sql(f"SEGMENT USING sam OPTIONS (box_col='box', weights='{tmp_path}/empty') AS SELECT * FROM items")
    with pytest.raises(OptionError, match="needs no weights"):
        db.sql(f"SEGMENT USING grabcut OPTIONS (box_col='box', weights='{tmp_path}') AS SELECT * FROM items")
    assert db.sql("SELECT count(*) FROM items").fetchone()[0] == 3


def test_a_folder_of_another_model_or_missing_tensors_is_refused_not_run_at_random(photos, tiny_sam, tmp_path):
    """transformers builds such a network at random (its warning silenced): SEGMENT gave masks of
    a random SAM, and another model's preprocessor failed later with a bare TypeError."""
    import shutil

    import torch
    from safetensors.torch import save_file

    db = photos
    partial = tmp_path / "partial"
    shutil.copytree(tiny_sam, partial)
    save_file({"unrelated": torch.zeros(2)}, str(partial / "model.safetensors"))
    with pytest.raises(WeightsUnavailableError, match="partial does not hold SAM weights: .* tensors are missing"):
        db.sql(f"SEGMENT USING sam OPTIONS (box_col='box', weights='{partial}') AS SELECT * FROM items")
    yolos = tmp_path / "yolos"
    config = transformers.YolosConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, image_size=[64, 96], patch_size=16, num_detection_tokens=5)
    transformers.YolosForObjectDetection(config).save_pretrained(yolos)
    transformers.YolosImageProcessor().save_pretrained(yolos)
    with pytest.raises(WeightsUnavailableError, match="yolos does not hold SAM weights: its config is a yolos model's"):
        db.sql(f"SEGMENT USING sam OPTIONS (box_col='box', weights='{yolos}') AS SELECT * FROM items")
    # another model's processor beside SAM's network: read from processor_config.json too, which a
    # processor's save_pretrained writes in transformers 5 (preprocessor_config.json alone was read)
    import json

    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_sam, mixed)
    written = [name for name in ("processor_config.json", "preprocessor_config.json") if (mixed / name).exists()]
    config = json.loads((mixed / written[0]).read_text())
    (config.get("image_processor") or config)["image_processor_type"] = "YolosImageProcessor"
    (mixed / written[0]).write_text(json.dumps(config))
    with pytest.raises(WeightsUnavailableError, match="mixed does not hold SAM weights: its preprocessor is a Yolos"):
        db.sql(f"SEGMENT USING sam OPTIONS (box_col='box', weights='{mixed}') AS SELECT * FROM items")
    assert db.sql("SELECT count(*) FROM items").fetchone()[0] == 3
