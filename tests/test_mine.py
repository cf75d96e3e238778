"""``ilias mine``: hard distractors by text-to-image similarity, checked for mechanics.

No vision-language weights exist offline, so two tiny open_clip models with random weights
(different seeds) stand in for an ensemble: created from a registered config, saved to a
file and loaded back through open_clip's ``pretrained=<file>`` path. Their real image
towers embed real photos read from WebDataset tar shards into real Qdrant Edge collections.
Every kept list is compared with the rule computed here with numpy over the stored vectors;
none of this says anything about which distractors are hard for a trained model.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from skimage import data
from tar_shards import write_shard
from typer.testing import CliRunner

from ilias import cli
from ilias.cli import app
from ilias.errors import DatasetError, EncoderSpecError, IliasError
from ilias.indexing import (
    DEFAULT_ENCODER,
    CollectionConfig,
    EdgeStore,
    ExtractionOptions,
    build_encoder,
    load_collection,
)
from ilias.loader import open_dataset, read_selection
from ilias.loader.sources import selected
from ilias.query.mining import (
    DEFAULT_TEMPLATES,
    class_names,
    default_per_prompt,
    make_prompts,
    mine_distractors,
    read_class_names,
    read_templates,
    selection_line,
    stats_path_for,
    taxonomy_class_names,
    write_selection,
)

runner = CliRunner()
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PHOTOS = [
    data.astronaut, data.coffee, data.chelsea, data.rocket, data.camera, data.coins,
    data.clock, data.brick, data.grass, data.moon, data.hubble_deep_field, data.retina,
]  # fmt: skip
TAXONOMY = {
    "animal": {"pet": {"cat": ["cat"]}},
    "product": {"drink": {"coffee": ["coffee"]}, "other": {"other": []}},
    "vehicle": {"space": {"rocket": ["rocket"]}},
}
NAMES = ["animal", "pet", "cat", "product", "drink", "coffee", "vehicle", "space", "rocket"]
N_DISTRACTORS = 16


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.console, "width", 250)


def tiny_clip(folder: Path, seed: int) -> str:
    """A tiny open_clip model with random weights (``seed``), loadable from a file."""
    (folder / "ilias-mine-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    torch.manual_seed(seed)
    model = open_clip.create_model("ilias-mine-clip")
    torch.save(model.state_dict(), folder / f"seed{seed}.pt")
    return f"open_clip:ilias-mine-clip@{folder / f'seed{seed}.pt'}"


def jpeg(index: int) -> bytes:
    """Distinct real photos: twelve scikit-image pictures, cropped differently per round."""
    image = Image.fromarray(PHOTOS[index % len(PHOTOS)]()).convert("RGB")
    w, h = image.size
    c = 6 * (index // len(PHOTOS)) + 1
    out = io.BytesIO()
    image.crop((c * w // 40, c * h // 60, w - c * w // 50, h)).resize((96, 72)).save(out, "JPEG")
    return out.getvalue()


def write_image_shard(path: Path, keys: list[str], first: int) -> None:
    members: list[tuple[str, bytes]] = []
    for offset, key in enumerate(keys):
        members += [(f"{key}.jpg", jpeg(first + offset)), (f"{key}.txt", b"c")]
    write_shard(path, members)


@pytest.fixture(scope="module")
def mined(tiny_ilias, tmp_path_factory):
    """Collections ``a`` and ``b``: ILIAS core + 16 shard distractors, one tiny model each."""
    root = tmp_path_factory.mktemp("mine")
    shutil.copytree(tiny_ilias / "core", root / "ilias_core")
    (root / "misc").mkdir()
    (root / "misc" / "taxonomy.json").write_text(json.dumps(TAXONOMY))  # as in the ILIAS repo
    (root / "yfcc").mkdir()
    write_image_shard(root / "yfcc" / "00000.tar", [f"10{i:02d}" for i in range(8)], 0)
    write_image_shard(root / "yfcc" / "00001.tar", [f"20{i:02d}" for i in range(8)], 8)
    (root / "clip").mkdir()
    specs = {name: tiny_clip(root / "clip", seed) for name, seed in (("a", 0), ("b", 1))}
    shards = f"{root / 'yfcc'}/{{00000..00001}}.tar"
    store = EdgeStore(root / "store")
    for name, spec in specs.items():
        options = ExtractionOptions(encoder=spec, scheduler="sync", partition_size=8)
        report = load_collection(open_dataset(root / "ilias_core", shards), store, name, options)
        assert report.loaded == 9 + N_DISTRACTORS
    yield root, store, specs, shards
    store.close()


def distractor_matrix(store, collection: str) -> tuple[list[str], np.ndarray]:
    ids = sorted(
        p["id"]
        for page in store.scan_payloads(collection, ["id"], {"role": "distractor"})
        for p in page
    )
    vectors = store.retrieve_vectors(collection, ids)
    return ids, np.stack([vectors[i] for i in ids])


def expected_ranking(store, specs, collections, prompts, m):
    """The documented rule, with numpy over the stored vectors: per encoder, each prompt's
    top m; a distractor's score is its max over the prompts that retrieved it; rank = how
    many candidates score strictly higher, a non-candidate ranks at the candidate count;
    order by mean rank (here: rank sum), then id."""
    texts = [p.text for p in prompts]
    total: dict[str, int] = {}
    per_encoder = []
    for collection in collections:
        ids, matrix = distractor_matrix(store, collection)
        sims = build_encoder(specs[collection]).encode_texts(texts) @ matrix.T  # (P, D)
        top_m = np.argsort(-sims, axis=1, kind="stable")[:, :m]
        gaps = np.sort(sims, axis=1)[:, ::-1]
        assert np.all(gaps[:, m - 1] - gaps[:, m] > 1e-5)  # no tie at any prompt's cut-off
        best = np.full(len(ids), -np.inf)
        for p in range(len(prompts)):
            best[top_m[p]] = np.maximum(best[top_m[p]], sims[p, top_m[p]])
        retrieved = np.isfinite(best)
        count = int(retrieved.sum())
        ranks = {
            ids[i]: int((best[retrieved] > best[i]).sum()) if retrieved[i] else count
            for i in range(len(ids))
        }
        per_encoder.append((ids, sims, top_m, best, ranks))
        for i in ids:
            total[i] = total.get(i, 0) + ranks[i]
    candidates = {ids[i] for *_, best, _ in per_encoder for i in np.flatnonzero(np.isfinite(best))}
    order = sorted(candidates, key=lambda i: (total[i], i))
    return order, per_encoder


# ------------------------------------------------------------------------------ units


def test_names_prompts_templates_and_lines(tmp_path):
    assert taxonomy_class_names(TAXONOMY) == NAMES  # "other" is no class; first seen first
    prompts = make_prompts(NAMES)
    assert len(prompts) == len(NAMES) * len(DEFAULT_TEMPLATES) == 72
    assert prompts[0].text == "a photo of a animal." and prompts[0].name == "animal"
    assert make_prompts(["cat", "cat"], ["{} photo", "{} photo"])[0].text == "cat photo"
    assert len(make_prompts(["cat", "cat"], ["{} photo", "{} photo"])) == 1
    assert default_per_prompt(5_000_000, 50, 100_000_000) == 200_000
    assert default_per_prompt(10, 9, 10_000) == 1000 and default_per_prompt(10, 9, 16) == 16
    assert selection_line("00042.tar/sub/123") == "sub/123"
    assert selection_line("distractors/photo.jpg") == "distractors/photo.jpg"
    assert stats_path_for(tmp_path / "mini.txt.gz") == tmp_path / "mini.stats.json"

    (tmp_path / "t.txt").write_text("# mine\na {} on a table\n\nitap of a {}\n")
    assert read_templates(tmp_path / "t.txt") == ["a {} on a table", "itap of a {}"]
    (tmp_path / "bad.txt").write_text("a {} photo\na photo\n")
    with pytest.raises(DatasetError, match=r"bad.txt:2: 'a photo' has no '\{\}'"):
        read_templates(tmp_path / "bad.txt")
    (tmp_path / "c.txt").write_text("mug\n\nmug\n teddy bear \n")
    assert read_class_names(tmp_path / "c.txt") == ["mug", "teddy bear"]
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(DatasetError, match="the class list is empty"):
        read_class_names(tmp_path / "empty.txt")
    with pytest.raises(DatasetError, match="names no category"):
        taxonomy_class_names({"other": {"other": {"other": ["x"]}}})
    with pytest.raises(DatasetError, match="expected"):
        taxonomy_class_names(["cat"])
    with pytest.raises(DatasetError, match="not both"):
        class_names(tmp_path / "t.json", tmp_path / "c.txt")
    with pytest.raises(DatasetError, match="looked for"):
        class_names(dataset=tmp_path)


def test_selection_lists_round_trip_through_read_selection(tmp_path):
    ids = ["00000.tar/1001", "00003.tar/sub/77", "distractors/x.jpg"]
    for name in ("list.txt", "list.txt.gz"):
        path = write_selection(tmp_path / name, ids)
        raw = path.read_bytes()
        assert raw.startswith(b"\x1f\x8b") == name.endswith(".gz")
        text = (gzip.decompress(raw) if name.endswith(".gz") else raw).decode()
        assert text == "1001\nsub/77\ndistractors/x.jpg\n"
        keys = read_selection(path)
        assert keys.keys == {"1001", "sub/77", "distractors/x.jpg"} and not keys.ids
        assert all(selected(i, keys) for i in ids)
        assert not selected("00000.tar/1002", keys) and not selected("distractors/y.jpg", keys)


# ---------------------------------------------------------------- mining on real engines


@pytest.mark.slow
@pytest.mark.parametrize("collections", [("a",), ("a", "b")])
def test_the_kept_list_is_the_top_n_of_the_documented_rule(mined, collections):
    _, store, specs, _ = mined
    prompts = make_prompts(NAMES)
    m, top = 3, 5
    result = mine_distractors(store, collections, prompts, top, per_prompt=m)
    order, per_encoder = expected_ranking(store, specs, collections, prompts, m)
    assert result.candidates == len(order) > top  # the search cut candidates off
    assert result.ids == order[:top]
    assert len(set(result.ids)) == top
    assert result.mean_ranks == sorted(result.mean_ranks)
    kept = set(result.ids)

    assert len(result.prompt_stats) == len(prompts) * len(collections)
    for summary, (ids, sims, top_m, best, _) in zip(result.encoders, per_encoder, strict=True):
        assert summary.candidates == int(np.isfinite(best).sum()) < N_DISTRACTORS
        assert (summary.distractors, summary.per_prompt) == (N_DISTRACTORS, m)
        rows = [s for s in result.prompt_stats if s.collection == summary.collection]
        for p, row in enumerate(rows):
            scores = sims[p, top_m[p]]
            assert row.prompt == prompts[p].text and row.retrieved == m
            assert row.min == pytest.approx(scores.min(), abs=1e-5)
            assert row.max == pytest.approx(scores.max(), abs=1e-5)
            assert row.median == pytest.approx(float(np.median(scores)), abs=1e-5)
            assert row.selected == sum(ids[i] in kept for i in top_m[p])
        # the statistics add up: every candidate has one best prompt, every kept one too
        assert sum(r.best_for for r in rows) == summary.candidates
        candidates = {ids[i] for i in np.flatnonzero(np.isfinite(best))}
        assert sum(r.selected_best for r in rows) == summary.selected == len(kept & candidates)
        # the certificate: above the highest m-th score, the retrieved max is the full max
        full = sims.max(axis=0)
        bound = max(np.sort(sims, axis=1)[:, -m])
        assert summary.complete_above == pytest.approx(bound, abs=1e-5)
        certain = np.flatnonzero(full > bound + 1e-5)
        assert summary.complete == len(certain)
        assert np.allclose(best[certain], full[certain], atol=1e-5)
    if len(collections) == 1:  # where certified, the ranking is the full matrix's
        _, sims, _, best, _ = per_encoder[0]
        assert result.encoders[0].complete is not None
        head = result.ids[: result.encoders[0].complete]
        ids = per_encoder[0][0]
        full_order = [ids[i] for i in np.argsort(-sims.max(axis=0))]
        assert head == full_order[: len(head)]
        # beyond it the rule is not the full matrix's here, so the test tells them apart
        assert result.ids != full_order[:top]


@pytest.mark.slow
def test_the_ensemble_is_not_either_encoder_alone(mined):
    """Two encoders disagree here, so the mean rank differs from each one's own ranking:
    a rule that used one encoder, or raw scores, would fail the test above or this one."""
    _, store, _, _ = mined
    prompts = make_prompts(NAMES)
    both = mine_distractors(store, ["a", "b"], prompts, 6, per_prompt=3).ids
    alone_a = mine_distractors(store, ["a"], prompts, 6, per_prompt=3).ids
    alone_b = mine_distractors(store, ["b"], prompts, 6, per_prompt=3).ids
    assert alone_a != alone_b and both not in (alone_a, alone_b)
    everything = mine_distractors(store, ["a"], prompts, 100, per_prompt=N_DISTRACTORS)
    assert len(everything.ids) == N_DISTRACTORS and everything.short
    assert everything.encoders[0].complete_above is None  # every prompt saw every distractor
    assert everything.encoders[0].complete == N_DISTRACTORS


@pytest.mark.slow
def test_a_mined_list_loads_exactly_its_distractors(mined):
    root, store, specs, shards = mined
    result = mine_distractors(store, ["a", "b"], make_prompts(NAMES), 5, per_prompt=3)
    listed = write_selection(root / "mini.txt.gz", result.ids)
    assert sorted(read_selection(listed).keys) == sorted(i.split(".tar/")[1] for i in result.ids)
    options = ExtractionOptions(encoder=specs["a"], scheduler="sync", partition_size=8)
    source = open_dataset(root / "ilias_core", shards, listed)
    report = load_collection(source, store, "mini", options)
    assert (report.loaded, report.selection_found) == (9 + 5, 5)
    ids, _ = distractor_matrix(store, "mini")
    assert ids == sorted(result.ids)


@pytest.mark.slow
def test_a_plain_collection_keeps_whole_ids(mined, tmp_path):
    _, store, _, _ = mined
    ids, matrix = distractor_matrix(store, "a")
    plain = [f"photos/{i.replace('.tar/', '_')}.jpg" for i in ids]
    config = store.collection_config("a")
    store.create_collection("plain", CollectionConfig(dim=config.dim, metadata=config.metadata))
    store.upsert("plain", plain, matrix, [{"role": "image"} for _ in plain])
    with pytest.raises(IliasError, match="has no points with role=distractor"):
        mine_distractors(store, ["plain"], make_prompts(NAMES), 4)
    result = mine_distractors(store, ["plain"], make_prompts(NAMES), 4, 3, role="image")
    expected = mine_distractors(store, ["a"], make_prompts(NAMES), 4, 3).ids
    assert result.ids == [plain[ids.index(i)] for i in expected]  # same vectors, same rule
    keys = read_selection(write_selection(tmp_path / "plain.txt", result.ids))
    assert [i for i in plain if selected(i, keys)] == sorted(result.ids)
    with pytest.raises(IliasError, match="different numbers of distractor points"):
        store.upsert("plain", ["extra.jpg"], matrix[:1], [{"role": "distractor"}])
        mine_distractors(store, ["a", "plain"], make_prompts(NAMES), 4)
    with pytest.raises(IliasError, match="named twice"):
        mine_distractors(store, ["a", "a"], make_prompts(NAMES), 4)


# --------------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_mines_with_the_datasets_taxonomy(mined):
    root, store, _, _ = mined
    store.close()  # the command opens the store (one owner per Edge shard); reopened lazily
    out = root / "cli" / "mini.txt.gz"
    base = ["--store", f"edge:{root / 'store'}"]
    done = runner.invoke(
        app, ["mine", "-c", "a", "-c", "b", "--top", "5", "--per-prompt", "3", "--out", str(out),
              *base],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert f"72 prompts: 9 class names from {root / 'misc' / 'taxonomy.json'}" in done.output
    assert "kept 5 of" in done.output
    library = mine_distractors(store, ["a", "b"], make_prompts(NAMES), 5, per_prompt=3)
    store.close()
    keys = gzip.decompress(out.read_bytes()).decode().splitlines()
    assert keys == [selection_line(i) for i in library.ids]
    stats = json.loads((root / "cli" / "mini.stats.json").read_text())
    assert stats["written"] == 5 and stats["classes"] == NAMES
    assert stats["templates"] == list(DEFAULT_TEMPLATES) and len(stats["prompts"]) == 144
    assert [e["collection"] for e in stats["encoders"]] == ["a", "b"]

    classes = root / "cli" / "classes.txt"
    classes.write_text("coffee mug\n")
    templates = root / "cli" / "templates.txt"
    templates.write_text("a photo of a {}.\n")
    short = runner.invoke(
        app, ["mine", "-c", "a", "--top", "50", "--classes", str(classes), "--templates",
              str(templates), "--out", str(root / "cli" / "all.txt"), *base],
    )  # fmt: skip
    assert short.exit_code == 0, short.output
    assert "only 16 candidates for --top 50: all were written" in short.output
    assert len((root / "cli" / "all.txt").read_text().splitlines()) == N_DISTRACTORS
    store.close()


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
    store_dir = tmp_path / "store"
    with EdgeStore(store_dir) as store:
        store.create_collection(
            "cnn",
            CollectionConfig(dim=1280, metadata={"encoder": DEFAULT_ENCODER, "resolution": 224}),
        )
        vector = np.zeros((1, 1280), dtype=np.float32)
        vector[0, 0] = 1.0
        store.upsert("cnn", ["00000.tar/1"], vector, [{"role": "distractor"}])
        # a vision-language spec (never built here: each refusal comes before the model)
        clip = {"encoder": "open_clip:ViT-B-16-SigLIP/webli", "resolution": 224}
        store.create_collection("clip", CollectionConfig(dim=768, metadata=clip))
    base = ["--store", f"edge:{store_dir}", "--out", str(tmp_path / "x.txt"), "--top", "3"]
    classes = tmp_path / "classes.txt"
    classes.write_text("mug\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")

    def refused(*args: str, kind: type[IliasError] = IliasError) -> str:
        done = runner.invoke(app, ["mine", *base, *args])  # later options win
        assert done.exit_code == 1 and isinstance(done.exception, kind), done.output
        assert "\n" not in str(done.exception)
        return str(done.exception)

    no_text = refused("-c", "cnn", "--classes", str(classes), kind=EncoderSpecError)
    assert "'cnn' was embedded with timm:tf_efficientnet_lite0" in no_text
    assert "no text tower" in no_text and "open_clip:" in no_text
    # said before asking for a taxonomy or class names it could not use
    assert refused("-c", "cnn", kind=EncoderSpecError) == no_text
    assert refused("-c", "clip", "-c", "cnn", kind=EncoderSpecError) == no_text
    assert "the class list is empty" in refused("-c", "clip", "--classes", str(empty))
    assert "records no ILIAS dataset folder" in refused("-c", "clip")
    assert "no such taxonomy file" in refused("-c", "clip", "--taxonomy", str(tmp_path / "no"))
    assert "--top 0" in refused("-c", "clip", "--classes", str(classes), "--top", "0")
    assert "no collection 'missing'" in refused("-c", "missing", "--classes", str(classes))
