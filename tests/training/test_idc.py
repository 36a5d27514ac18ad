"""The IDC path on a generated tree in the Kaggle layout: loader, patient split, streaming, training, export."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.model.manifest import load_manifest
from training.idc_data import scan_idc_tree, split_index, split_patients
from training.idc_synthetic import write_synthetic_idc_tree


@pytest.fixture(scope="module")
def idc_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("idc") / "patches"
    write_synthetic_idc_tree(root, patients=12, patches_per_patient=24, seed=5, edge_fraction=0.1)
    return root


def test_generator_writes_the_kaggle_layout(idc_tree: Path) -> None:
    files = sorted(idc_tree.rglob("*.png"))
    assert len(files) == 12 * 24
    pattern = re.compile(r"^(\d+)_idx5_x\d+_y\d+_class([01])\.png$")
    sizes = set()
    for file in files:
        match = pattern.match(file.name)
        assert match is not None, file.name
        patient, label = match.groups()
        assert file.parent.name == label and file.parent.parent.name == patient
        with Image.open(file) as image:
            assert image.mode == "RGB"
            sizes.add(image.size)
    assert (50, 50) in sizes and len(sizes) > 1  # some smaller edge patches, like the real set


def test_scan_indexes_every_patch_with_label_and_patient(idc_tree: Path) -> None:
    index = scan_idc_tree(idc_tree)
    assert len(index) == 12 * 24
    assert np.unique(index.patients).size == 12
    for path, label, patient in zip(index.paths, index.labels, index.patients, strict=True):
        assert Path(path).parent.name == str(label) and Path(path).parent.parent.name == patient
        assert path.endswith(f"_class{label}.png")


def test_split_is_by_patient_80_10_10(idc_tree: Path) -> None:
    index = scan_idc_tree(idc_tree)
    splits = split_index(index, seed=1)
    members = {name: set(part.patients.tolist()) for name, part in splits.items()}
    assert not members["train"] & members["validation"]
    assert not members["train"] & members["test"]
    assert not members["validation"] & members["test"]
    assert sum(len(part) for part in splits.values()) == len(index)
    assert [len(members[n]) for n in ("train", "validation", "test")] == [10, 1, 1]
    groups = split_patients([str(i) for i in range(279)], seed=0)
    assert [g.size for g in groups.values()] == [223, 28, 28]
    assert np.array_equal(split_patients(index.patients, 4)["test"], split_patients(index.patients, 4)["test"])


def test_layout_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "stray").mkdir()
    with pytest.raises(ValueError, match="not a patient directory"):
        scan_idc_tree(tmp_path)
    mixed = tmp_path / "mixed"
    (mixed / "10253" / "0").mkdir(parents=True)
    Image.new("RGB", (50, 50)).save(mixed / "10253" / "0" / "10253_idx5_x1_y1_class1.png")
    with pytest.raises(ValueError, match="class1 patch inside the 0/ directory"):
        scan_idc_tree(mixed)
    empty = tmp_path / "empty"
    (empty / "10253" / "1").mkdir(parents=True)
    with pytest.raises(ValueError, match="no <patient>"):
        scan_idc_tree(empty)
    with pytest.raises(ValueError, match="at least 3 patients"):
        split_patients(["a", "b"], seed=0)


def test_stream_decodes_pads_and_weights(idc_tree: Path) -> None:
    from training.idc_model import patch_dataset
    from training.tf_setup import import_tensorflow

    tf = import_tensorflow(2, seed=0)
    index = scan_idc_tree(idc_tree)
    batches = list(patch_dataset(tf, index, 64, class_weight={0: 0.7, 1: 1.8}))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    w = np.concatenate([b[2].numpy() for b in batches])
    assert x.shape == (len(index), 50, 50, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.array_equal(y, index.labels.astype(np.float32))
    assert np.allclose(w, np.where(y > 0.5, 1.8, 0.7))
    pixels = [decoded(path) for path in index.paths]
    full = next(i for i, p in enumerate(pixels) if p.shape == (50, 50, 3))
    assert np.allclose(x[full], pixels[full])
    # An edge patch, chosen explicitly: its pixels sit centred and the border around them is zero.
    edge = max(range(len(pixels)), key=lambda i: 2500 - pixels[i].shape[0] * pixels[i].shape[1])
    h, w_px = pixels[edge].shape[:2]
    assert h * w_px < 2500, "the generated tree must hold an edge patch"
    top, left = (50 - h) // 2, (50 - w_px) // 2
    assert np.allclose(x[edge, top : top + h, left : left + w_px], pixels[edge])
    assert pixels[edge].min() > 0.0  # so the zero border below cannot be the patch's own pixels
    border = np.ones((50, 50), dtype=bool)
    border[top : top + h, left : left + w_px] = False
    assert np.all(x[edge][border] == 0.0)


def decoded(path: str) -> np.ndarray:
    """One patch file as `rgb_unit` pixels, read with PIL (not TensorFlow) for an independent check."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


@pytest.mark.slow
def test_train_idc_end_to_end_exports_a_valid_model(idc_tree: Path, tmp_path: Path) -> None:
    from training.idc_pipeline import IdcRunOptions, run_idc_training

    report = run_idc_training(
        IdcRunOptions(data=idc_tree, out=tmp_path / "idc", epochs=1, batch_size=32, seed=0, progress=False)
    )
    manifest = load_manifest(tmp_path / "idc", verify=True)
    assert manifest.task == "idc_histopathology"
    assert manifest.input_shape == [50, 50, 3] and manifest.preprocessing.kind == "rgb_unit"
    assert set(report["test"]) >= {"precision", "accuracy", "auc", "recall"}
    train_p, test_p = set(report["patients_by_split"]["train"]), set(report["patients_by_split"]["test"])
    assert not train_p & test_p
    assert report["export"]["keras_vs_float_tflite_max_abs_diff"] < 1e-4
    assert (tmp_path / "idc" / "idc_report.json").is_file()
