"""The optional geometry stream: a face's landmarks + blendshapes as tokens beside its image tokens.

Tiny random configs of the real classes; the real MediaPipe detector on the bundled example face."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from conftest import tiny_model_config
from decoding_helpers import compare, random_crops, tiny_model

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat
from aullava.faces.geometry_features import BLENDSHAPE_NAMES, FEATURE_SIZE, LANDMARK_FEATURES, geometry_features
from aullava.model.config import AuLlavaConfig
from aullava.model.modeling import GEOMETRY_NAME, AuLlavaModel

GEOMETRY = {"enabled": True, "num_tokens": 3, "hidden_size": 16}


def geometry_model(tokenizer_dir, au_set="bp4d", seed=0, vision="clip", **geometry):
    model = tiny_model(tokenizer_dir, au_set, seed, vision=vision, geometry={**GEOMETRY, **geometry})
    with torch.no_grad():  # a geometry stream that matters: larger weights than a fresh init
        for param in list(model.geometry_encoder.parameters()) + list(model.geometry_projector.parameters()):
            if param.dim() == 2:
                param.normal_(0, 3 / param.shape[1] ** 0.5)
    return model


def random_geometry(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    landmarks = rng.normal(0, 0.2, (n, LANDMARK_FEATURES))
    blendshapes = rng.random((n, FEATURE_SIZE - LANDMARK_FEATURES))
    return torch.from_numpy(np.concatenate([landmarks, blendshapes], 1).astype(np.float32))


@pytest.fixture(scope="module")
def astronaut_face(astronaut_path, detector):
    from aullava.faces.images import load_image

    return detector.detect(load_image(astronaut_path))[0]


# ----- the features -------------------------------------------------------------------------------------------
def test_features_are_the_crop_frame_landmarks_and_the_blendshapes(astronaut_face):
    face = astronaut_face
    size = face.crop.shape[0]
    features = geometry_features(face.landmarks, face.matrix, face.blendshapes, size)
    assert features.shape == (FEATURE_SIZE,) and features.dtype == np.float32
    landmarks = features[:LANDMARK_FEATURES].reshape(478, 3)
    np.testing.assert_allclose(landmarks[:, :2] + 0.5, face.crop_landmarks / size, atol=1e-6)
    assert abs(landmarks[:, 2].mean()) < 1e-6 and landmarks[:, 2].std() > 0.01  # depth kept, centred
    assert tuple(face.blendshapes) == BLENDSHAPE_NAMES  # the detector's names, in the documented order
    np.testing.assert_allclose(features[LANDMARK_FEATURES:], list(face.blendshapes.values()), atol=1e-6)


def test_features_do_not_depend_on_where_the_face_is_or_how_big(astronaut_face):
    """The same face turned, shrunk and moved in the picture (a similarity of the landmarks, z scaled alike)
    gives the same geometry: only the face's shape and movements are left."""
    from aullava.faces.detector import alignment_matrix

    face = astronaut_face
    angle, scale, shift = 0.4, 0.37, np.array([500.0, -80.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = np.empty_like(face.landmarks, dtype=np.float64)
    moved[:, :2] = face.landmarks[:, :2] @ rotation.T + shift
    moved[:, 2] = face.landmarks[:, 2] * scale + 3.0
    before = geometry_features(face.landmarks, face.matrix, face.blendshapes, 224)
    after = geometry_features(moved, alignment_matrix(moved, 224), face.blendshapes, 224)
    np.testing.assert_allclose(after, before, atol=1e-5)


# ----- the config ---------------------------------------------------------------------------------------------
def test_geometry_config_is_strict_and_off_by_default():
    assert not AuLlavaConfig().geometry.enabled
    assert "geometry" not in AuLlavaConfig().to_dict()  # a model without it writes the config.json it always wrote
    with pytest.raises(ValueError, match="model.geometry: unknown key 'num_token'; did you mean 'num_tokens'"):
        AuLlavaConfig.from_dict({"geometry": {"enabled": True, "num_token": 4}})
    with pytest.raises(ValueError, match="num_tokens must be a whole number"):
        AuLlavaConfig.from_dict({"geometry": {"enabled": True, "num_tokens": 0}})
    with pytest.raises(ValueError, match="reads nothing"):
        AuLlavaConfig.from_dict({"geometry": {"enabled": True, "use_landmarks": False, "use_blendshapes": False}})
    config = AuLlavaConfig.from_dict({"geometry": {"enabled": True, "num_tokens": 2}})
    assert AuLlavaConfig.from_dict(config.to_dict()).geometry == config.geometry


# ----- layout, decoding ---------------------------------------------------------------------------------------
def test_geometry_placeholders_follow_the_image_placeholders(char_tokenizer_dir):
    plain = tiny_model(char_tokenizer_dir, "disfa", 0)
    model = geometry_model(char_tokenizer_dir, "disfa")
    assert not plain.wants_geometry and model.wants_geometry and model.num_face_tokens == plain.num_image_tokens + 3
    for fmt in ALL_FORMATS:
        ours, theirs = model.processor.encode_example(fmt), plain.processor.encode_example(fmt)
        prefix = len(model.processor.prompt_ids(fmt)[0])
        n = plain.num_image_tokens
        placeholder = model.processor.image_token_id
        at = prefix + n
        assert ours["input_ids"] == theirs["input_ids"][:at] + [placeholder] * 3 + theirs["input_ids"][at:]
        assert ours["image_mask"] == theirs["image_mask"][:at] + [1] * 3 + theirs["image_mask"][at:]


@pytest.mark.parametrize("au_set,seed,faces", [("bp4d", 0, 8), (["AU12", "AU25"], 2, 12)])
def test_parallel_equals_sequential_with_geometry(char_tokenizer_dir, au_set, seed, faces):
    model = geometry_model(char_tokenizer_dir, au_set, seed)
    crops, geometry = random_crops(faces, seed), random_geometry(faces, seed)
    decoder, readouts, texts = compare(model, crops, geometry=geometry)
    assert decoder.encoder_calls == faces
    assert max(r[fmt].passes for r in readouts for fmt in ALL_FORMATS) > 1


def test_the_answers_read_the_geometry(char_tokenizer_dir):
    """Same crops, other geometry: other probabilities; and a geometry model without geometry is a clear error."""
    from aullava.model.decoding.parallel import ParallelDecoder

    model = geometry_model(char_tokenizer_dir, "bp4d", 3)
    crops = random_crops(8, 3)
    decoder = ParallelDecoder(model)
    first = decoder.decode(crops, [AnswerFormat.BINARY], geometry=random_geometry(8, 1))
    again = decoder.decode(crops, [AnswerFormat.BINARY], geometry=random_geometry(8, 1))
    second = decoder.decode(crops, [AnswerFormat.BINARY], geometry=random_geometry(8, 2))
    p = [np.stack([face[AnswerFormat.BINARY].expected for face in r]) for r in (first, again, second)]
    np.testing.assert_array_equal(p[0], p[1])
    assert np.abs(p[0] - p[2]).max() > 1e-5  # a random LLM barely reads its inputs, but it does
    with pytest.raises(ValueError, match="reads face geometry"):
        decoder.decode(crops, [AnswerFormat.BINARY])


def test_blendshapes_only_ignores_the_landmarks(char_tokenizer_dir):
    model = geometry_model(char_tokenizer_dir, "disfa", 4, use_landmarks=False)
    geometry = random_geometry(4, 4)
    moved = geometry.clone()
    moved[:, :LANDMARK_FEATURES] += 0.3
    with torch.no_grad():
        a = model.geometry_encoder(geometry)
        b = model.geometry_encoder(moved)
        geometry[:, -1] += 0.5
        c = model.geometry_encoder(geometry)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


# ----- checkpoint ---------------------------------------------------------------------------------------------
def test_save_load_round_trip_and_a_missing_geometry_file(char_tokenizer_dir, tmp_path):
    from aullava.model.checkpoint import CheckpointError

    model = geometry_model(char_tokenizer_dir, "disfa", 5, vision="efficientnet")
    crops, geometry = random_crops(3, 5, size=64), random_geometry(3, 5)
    example = model.processor.encode_example("binary")
    ids = torch.tensor([example["input_ids"]] * 3)
    mask = torch.tensor([example["image_mask"]] * 3)
    with torch.no_grad():
        before = model(crops, ids, torch.ones_like(ids), mask, geometry=geometry)["logits"]
    model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["geometry"]["enabled"] and (tmp_path / "ckpt" / GEOMETRY_NAME).is_file()
    loaded = AuLlavaModel.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        after = loaded(crops, ids, torch.ones_like(ids), mask, geometry=geometry)["logits"]
    torch.testing.assert_close(after, before)
    (tmp_path / "ckpt" / GEOMETRY_NAME).unlink()
    with pytest.raises(CheckpointError, match="geometry.safetensors is missing"):
        AuLlavaModel.from_pretrained(tmp_path / "ckpt")


# ----- data path ----------------------------------------------------------------------------------------------
def test_predictor_reads_the_detected_geometry(char_tokenizer_dir, astronaut_path, detector, astronaut_face):
    """predict hands each detected face's geometry to the model: its answers are those of the decoder given the
    crop and the geometry computed from the same detection."""
    from aullava.faces.images import load_image
    from aullava.inference import Predictor
    from aullava.model.decoding.parallel import ParallelDecoder

    model = geometry_model(char_tokenizer_dir, ["AU1", "AU12", "AU25"], 6, vision="efficientnet")
    results = Predictor(model, detector=detector, precision="fp32").predict([load_image(astronaut_path)])
    face = astronaut_face
    vector = torch.from_numpy(geometry_features(face.landmarks, face.matrix, face.blendshapes,
                                                face.crop.shape[0]))[None]
    expected = ParallelDecoder(model).decode(torch.from_numpy(face.crop)[None], geometry=vector)[0]
    for fmt in ALL_FORMATS:
        assert results[0].faces[0].texts[fmt.value] == expected[fmt].text
    # one row per batch: a random model sits near ties (p ≈ 0.4997), where the left padding of mixed formats in
    # one batch is enough to flip a value
    sequential = Predictor(model, detector=detector, precision="fp32", decoder="sequential", batch_size=1).predict(
        [load_image(astronaut_path)])
    assert sequential[0].faces[0].texts == results[0].faces[0].texts


def test_crop_cache_geometry_and_old_caches(tmp_path, astronaut_path, astronaut_face):
    """The cache keeps what the geometry needs; a cache built without landmarks gets them on a landmarks build;
    labelled samples then carry the same geometry the detector gives at prediction time."""
    import pandas as pd

    from aullava.datasets import LabelledFaces, frame_source
    from aullava.datasets.manifest import read_manifest
    from aullava.faces.crop_cache import FaceCropCache

    manifest = tmp_path / "faces.csv"
    pd.DataFrame({"subject": ["a"], "image": [str(astronaut_path)], "AU12": [0.4]}).to_csv(manifest, index=False)
    frames = read_manifest(manifest)
    sources = [frame_source(row) for _, row in frames.table.iterrows()]
    old = FaceCropCache(tmp_path / "crops")
    assert old.build(sources, progress=False).built == 1
    assert old.geometry(sources[0]) is None  # built before geometry: no landmarks
    without = LabelledFaces(frames, old, geometry=True)
    assert len(without) == 0 and without.dropped == 1  # rows without geometry are not trained on

    cache = FaceCropCache(tmp_path / "crops", landmarks=True)
    report = cache.build(sources, progress=False)
    assert report.built == 1 and report.cached == 0  # detected again for its landmarks
    assert cache.build(sources, progress=False).cached == 1
    faces = LabelledFaces(frames, cache, geometry=True)
    sample = faces[0]
    face = astronaut_face
    np.testing.assert_allclose(sample["geometry"],
                               geometry_features(face.landmarks, face.matrix, face.blendshapes, 224), atol=1e-5)
    assert "geometry" not in LabelledFaces(frames, cache)[0]


# ----- training -----------------------------------------------------------------------------------------------
def test_recipe_trains_the_geometry_stream_and_round_trips(char_tokenizer_dir, tmp_path):
    from aullava.training.recipe import train

    config = tiny_model_config(char_tokenizer_dir, vision="clip", au_set=["AU1", "AU2", "AU4"])
    recipe = {
        "model": {**asdict(config), "geometry": {"enabled": True, "num_tokens": 2, "hidden_size": 16}},
        "data": {"train": {"type": "patterns", "num_samples": 16, "seed": 0}, "formats": ["binary", "continuous"]},
        "training": {"output_dir": str(tmp_path / "run"), "per_device_train_batch_size": 4, "learning_rate": 1e-3,
                     "max_steps": 4, "save_steps": 4, "logging_steps": 1, "use_cpu": True, "disable_tqdm": True,
                     "seed": 0},
    }
    torch.manual_seed(0)
    initial = AuLlavaModel(AuLlavaConfig.from_dict(recipe["model"]))
    trainer = train(recipe)
    model = trainer.model
    assert model.trainable_parameters()["geometry"] > 0
    assert all(p.requires_grad for p in model.geometry_encoder.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(initial.geometry_encoder.parameters(),
                                                     model.geometry_encoder.parameters())]
    frozen = "language_model.model.embed_tokens.weight"
    torch.testing.assert_close(initial.state_dict()[frozen], model.state_dict()[frozen])  # the same start
    assert all(moved)  # every geometry weight was trained
    loaded = AuLlavaModel.from_pretrained(tmp_path / "run")
    assert loaded.wants_geometry and loaded.config.trained
    for a, b in zip(loaded.state_dict().items(), model.state_dict().items()):
        if a[0].startswith(("geometry_", "projector.")):
            torch.testing.assert_close(a[1], b[1])


def test_vision_stage_warms_up_the_geometry_stream_and_can_freeze_it(char_tokenizer_dir):
    """The warm-up's AU head reads image and geometry tokens: the geometry stream learns there, its tokens end at
    the text embeddings' norm, the LLM is untouched; `freeze: [geometry]` keeps it fixed afterwards."""
    from aullava.datasets import PatternFaces
    from aullava.training.recipe import freeze_parts
    from aullava.training.vision_stage import warm_up_vision

    torch.manual_seed(0)
    config = tiny_model_config(char_tokenizer_dir, vision="clip", au_set=["AU1", "AU2", "AU4"])
    config.geometry = {"enabled": True, "num_tokens": 2, "hidden_size": 16}
    model = AuLlavaModel(config)
    before = [p.detach().clone() for p in model.geometry_encoder.parameters()]
    llm_before = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    data = PatternFaces(3, num_samples=16, image_size=model.vision_encoder.image_size, geometry=True)
    warm_up_vision(model, data, steps=3, batch_size=8, learning_rate=1e-2)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.geometry_encoder.parameters()))
    assert all(torch.equal(v, llm_before[k]) for k, v in model.language_model.state_dict().items())
    shapes = torch.from_numpy(np.stack([data[i]["geometry"] for i in range(8)]))
    prefix, question = model.processor.prompt_ids("binary")
    with torch.no_grad():
        text = model.language_model.get_input_embeddings()(torch.tensor([prefix + question])).norm(dim=-1).mean()
        tokens = model.geometry_projector(model.geometry_encoder(shapes)).norm(dim=-1).mean()
    assert float(tokens) == pytest.approx(float(text), rel=0.05)
    freeze_parts(model, ["geometry"])
    assert not any(p.requires_grad for p in model.geometry_encoder.parameters())
    assert not any(p.requires_grad for p in model.geometry_projector.parameters())
