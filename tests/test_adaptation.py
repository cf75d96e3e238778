"""Linear adaptation: training recipe, reference file format, and use inside encoders."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from ilias.cli import app
from ilias.errors import EncoderSpecError
from ilias.indexing import DEFAULT_ENCODER, EdgeStore, build_encoder
from ilias.indexing.adaptation import (
    LinearAdaptation,
    heldout_retrieval,
    load_adaptation,
    save_adaptation,
    split_by_label,
    train_adaptation,
)
from ilias.loader import read_labelled


def nuisance_features(n_classes=60, per_class=15, seed=0):
    """Class signal in 8 dimensions buried under shared nuisance in 120 others: raw
    cosine retrieval is poor, and one linear map (suppress the nuisance) fixes it for
    classes never seen in training."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, 8))
    labels = np.repeat(np.arange(n_classes), per_class)
    signal = centers[labels] + 0.3 * rng.standard_normal((len(labels), 8))
    noise = 0.8 * rng.standard_normal((len(labels), 120))
    x = np.concatenate([signal, noise], axis=1).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def test_training_improves_retrieval_of_unseen_classes():
    x, labels = nuisance_features()
    train, heldout = split_by_label(labels, 0.25, seed=0)
    assert not set(labels[train]) & set(labels[heldout])
    _, dense = np.unique(labels[train], return_inverse=True)
    # Small data needs more steps than the recipe's "a few epochs" over UnED's millions.
    result = train_adaptation(
        x[train], dense, x[heldout], labels[heldout], d_out=32, epochs=20, lr=1e-2
    )
    # the reports describe the raw descriptors and the returned layer, exactly
    before = heldout_retrieval(x[heldout], labels[heldout])
    assert (result.before.recall_at_1, result.before.map) == before
    after = result.epochs[-1]
    adapted = result.layer.apply_numpy(x[heldout])
    assert (after.recall_at_1, after.map) == heldout_retrieval(adapted, labels[heldout])
    assert [e.epoch for e in result.epochs] == list(range(1, 21))
    # raw mAP is about 23, a random 32-d layer gives about 11, the trained one about 44:
    # a layer that did not learn (or learnt the nuisance) stays below 30
    assert before[1] == pytest.approx(22.75, abs=0.01)
    assert after.map > 35.0 and after.map > before[1] + 15
    assert result.epochs[-1].loss < 0.2 * result.epochs[0].loss
    # heldout_retrieval's mAP is sklearn's AP of each leave-one-out query, averaged
    x_h, l_h = x[heldout], labels[heldout]
    aps = []
    for i in range(len(x_h)):
        others = np.arange(len(x_h)) != i
        relevant = l_h[others] == l_h[i]
        if relevant.any():
            aps.append(average_precision_score(relevant, x_h[others] @ x_h[i]))
    assert before[1] == pytest.approx(100 * np.mean(aps), abs=1e-6)


def test_heldout_retrieval_by_hand():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    assert heldout_retrieval(x, [0, 0, 1, 1]) == (100.0, 100.0)
    # each item's nearest is the wrong class; its match sits at rank 3, 2, 3, 2
    r1, ap = heldout_retrieval(x, [0, 1, 0, 1])
    assert r1 == 0.0 and ap == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 / 3 + 1 / 2) / 4)


def test_reference_format_round_trip(tmp_path):
    layer = LinearAdaptation(16, 4)
    path = save_adaptation(layer, tmp_path / "layer.pth")
    assert set(torch.load(path, weights_only=True)) == {"layer.weight", "layer.bias"}
    # a layer saved the reference's way (plain state dict of a module with `.layer`)
    reference = torch.nn.Module()
    reference.layer = torch.nn.Linear(16, 4)
    torch.save(reference.state_dict(), tmp_path / "reference.pth")
    loaded = load_adaptation(tmp_path / "reference.pth")
    assert (loaded.d_in, loaded.d_out) == (16, 4)
    assert torch.equal(loaded.layer.weight, reference.layer.weight)
    torch.save({"fc.weight": torch.zeros(4, 16)}, tmp_path / "other.pth")
    with pytest.raises(EncoderSpecError, match=r"layer\.weight"):
        load_adaptation(tmp_path / "other.pth")


@pytest.mark.slow
def test_adapted_encoder_applies_the_layer_to_images(tmp_path, tiny_ilias):
    layer = LinearAdaptation(1280, 64)
    path = save_adaptation(layer, tmp_path / "layer.pth")
    base = build_encoder(DEFAULT_ENCODER, 224)
    adapted = build_encoder(f"{DEFAULT_ENCODER}|adapt={path}", 224)
    assert adapted.dim == 64 and adapted.resolution == 224
    image = tiny_ilias / "core" / "cat" / "query" / "Q000.jpg"
    from PIL import Image

    picture = Image.open(image).convert("RGB")
    expected = layer.apply_numpy(base.encode_images([picture]))
    np.testing.assert_allclose(adapted.encode_images([picture]), expected, atol=1e-5)
    small = save_adaptation(LinearAdaptation(512, 8), tmp_path / "small.pth")
    with pytest.raises(EncoderSpecError, match="1280-d"):
        build_encoder(f"{DEFAULT_ENCODER}|adapt={small}", 224)


def test_read_labelled_folder_and_csv(tmp_path, tiny_ilias):
    folder = tmp_path / "labelled" / "photos" / "cat"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes((tiny_ilias / "core/cat/query/Q000.jpg").read_bytes())
    records = read_labelled(tmp_path / "labelled")
    assert [(r.payload["class"], r.payload["domain"]) for r in records] == [("cat", "photos")]
    csv = tmp_path / "list.csv"
    csv.write_text(f"{folder / 'a.jpg'},cat,photos\nsome/b.jpg,dog,sketches\n")
    assert [r.payload["domain"] for r in read_labelled(csv)] == ["photos", "sketches"]


@pytest.mark.slow
def test_cli_train_then_load_with_the_layer(tmp_path, tiny_ilias):
    rows = []
    for instance in ("cat", "coffee", "rocket"):
        for path in sorted((tiny_ilias / "core" / instance).rglob("*.jpg")):
            rows.append(f"{path},{instance},photo")
    for path in sorted((tiny_ilias / "distractors").glob("*.jpg"))[:6]:
        rows.append(f"{path},{path.stem},photo")
    (tmp_path / "train.csv").write_text("\n".join(rows))
    runner = CliRunner()
    result = runner.invoke(app, [
        "adapt", "train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "layer.pth"),
        "--dim", "16", "--epochs", "2", "--heldout", "0.3", "--resolution", "224",
        "--scheduler", "sync",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())  # rich wraps long lines
    assert "layer saved to" in words and "R@1" in words
    assert words.count("loss") == 2 and words.count("untrained") == 1  # each epoch once
    # the default is the reference's recipe: every label trained, no retrieval check shown
    default = runner.invoke(app, [
        "adapt", "train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "all.pth"),
        "--dim", "16", "--epochs", "1", "--resolution", "224", "--scheduler", "sync",
    ])  # fmt: skip
    assert default.exit_code == 0, default.output
    said = " ".join(default.output.split())
    assert "17 training / 0 held-out images, 8 (class, domain) labels, 1 unreadable" in said
    assert "nan" not in said and "R@1" not in said
    assert said.count("loss") == 1 and "untrained" not in said
    store = f"edge:{tmp_path / 'qdrant'}"
    spec = f"{DEFAULT_ENCODER}|adapt={tmp_path / 'layer.pth'}"
    result = runner.invoke(app, [
        "load", str(tiny_ilias / "distractors"), "--store", store, "-c", "adapted",
        "--encoder", spec, "--resolution", "224", "--scheduler", "sync",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    layer = load_adaptation(tmp_path / "layer.pth")
    assert (layer.d_in, layer.d_out) == (1280, 16)
    moon = tiny_ilias / "distractors" / "moon.jpg"
    from PIL import Image

    expected = build_encoder(spec, 224).encode_images([Image.open(moon).convert("RGB")])[0]
    with EdgeStore(tmp_path / "qdrant") as opened:
        config = opened.collection_config("adapted")
        stored = opened.retrieve_vectors("adapted", ["distractors/moon.jpg"])
    assert config.dim == 16 and config.metadata["encoder"] == spec
    np.testing.assert_allclose(stored["distractors/moon.jpg"], expected, atol=1e-4)


def reference_recipe(x, labels, seed, d_out=512, epochs=5, batch_size=128):
    """The ILIAS reference's training (linear_adaptation/src/lin_adapt.py), re-stated as its
    code documents it: network built then trained after ``torch.manual_seed(seed)``."""
    import torch.nn.functional as F
    from torch.utils.data import BatchSampler, RandomSampler

    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], d_out)
    torch.nn.init.xavier_uniform_(layer.weight)
    torch.nn.init.constant_(layer.bias, 0.0)
    n_classes = int(labels.max()) + 1
    classifier = torch.nn.Linear(d_out, n_classes, bias=False)
    params = [layer.weight, layer.bias, classifier.weight]
    optimizer = torch.optim.Adam(params, lr=0.001, weight_decay=1e-6)
    features, targets = torch.from_numpy(x), torch.from_numpy(labels)
    sampler = BatchSampler(RandomSampler(range(len(x))), batch_size=batch_size, drop_last=True)
    for _ in range(epochs):
        for ind in sampler:
            adapted = F.normalize(F.normalize(layer(features[ind, :]), p=2, dim=-1), dim=-1)
            logits = adapted @ F.normalize(classifier.weight, p=2, dim=1).T
            one_hot = F.one_hot(targets[ind], num_classes=n_classes).float()
            logits = (logits - 0.0) * one_hot + logits * (1 - one_hot)
            loss = torch.nn.CrossEntropyLoss()(logits * 16.0, targets[ind])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return layer


def test_default_recipe_is_bit_identical_to_the_reference():
    x, labels = nuisance_features(n_classes=12, per_class=25, seed=3)  # 300: 2 full batches
    expected = reference_recipe(x, labels, seed=7)
    state = torch.random.get_rng_state()
    result = train_adaptation(x, labels, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream is kept
    assert result.layer.d_out == 512
    assert torch.equal(result.layer.layer.weight, expected.weight)
    assert torch.equal(result.layer.layer.bias, expected.bias)
    assert np.isnan(result.before.map) and np.isnan(result.epochs[-1].recall_at_1)  # no check
    assert len(result.epochs) == 5
    # each departure from the recipe gives another layer: the equality above is not vacuous
    for option in ({"init": "xavier"}, {"drop_last": False}, {"seed": 8}):
        options = {"seed": 7, **option}
        other = train_adaptation(x, labels, **options).layer.layer.weight  # type: ignore[arg-type]
        assert not torch.equal(other, expected.weight), option


def test_fewer_descriptors_than_a_batch_still_train():
    x, labels = nuisance_features(n_classes=4, per_class=10)
    result = train_adaptation(x, labels, d_out=8, epochs=1)
    assert np.isfinite(result.epochs[0].loss)  # one batch of 40, not zero batches


def test_records_train_on_all_labels_in_record_order_whatever_order_workers_finish(monkeypatch):
    """The reference trains on every UnED label, numbered by first appearance, in file order."""
    import ilias.indexing.adaptation_training as training
    from ilias.indexing.extract import ExtractedPartition
    from ilias.loader import Record

    x, labels = nuisance_features(n_classes=6, per_class=25, seed=5)
    records = [
        # names sort the other way round: sorted numbering would give other labels
        Record(f"img{i:03d}", f"img{i:03d}.jpg", {"class": f"c{5 - label}", "domain": "d"})
        for i, label in enumerate(labels)
    ]
    halves = [list(range(75, 150)), list(range(75))]  # the second half finishes first

    def finished_out_of_order(records_, options):
        for half in halves:
            ids = [records[i].id for i in half]
            yield ExtractedPartition(ids, x[half], [{}] * len(half), x.shape[1], 224)

    monkeypatch.setattr(training, "extract", finished_out_of_order)
    run = training.train_from_records(records, "timm:any", epochs=2)
    assert (run.n_train, run.n_heldout, run.n_classes) == (150, 0, 6)
    expected = train_adaptation(x, labels, epochs=2).layer  # labels 0..5 by first appearance
    assert torch.equal(run.result.layer.layer.weight, expected.layer.weight)
    held = training.train_from_records(records, "timm:any", epochs=1, heldout_fraction=0.34)
    assert held.n_heldout == 50 and np.isfinite(held.result.epochs[0].map)
