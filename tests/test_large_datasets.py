"""Clothing1M / mini-WebVision builders, the streaming pipeline and mixup.

The real datasets cannot be downloaded here, so every test runs on tiny trees
fabricated under tmp_path in the official layouts (a few 8x8-to-12x12 JPEGs,
the release's key lists and label files), prepared with TFDS into a temporary
data dir.
"""

import csv
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from PIL import Image
from scipy import stats

from sgn_jax.data import clothing1m
from sgn_jax.data import mixup as mixup_lib
from sgn_jax.data import streaming
from sgn_jax.data import webvision
from sgn_jax.data.dataset import DataNotFoundError

REPO = pathlib.Path(__file__).resolve().parents[1]

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

# Fabricated Clothing1M: noisy train counts per class (uneven on purpose).
C1M_TRAIN_COUNTS = (10, 8, 6)


def _save(root, rel, seed, size=(8, 8), mode="RGB", fmt="JPEG", color=None):
  path = pathlib.Path(root) / rel
  path.parent.mkdir(parents=True, exist_ok=True)
  if color is not None:
    array = np.broadcast_to(np.asarray(color, np.uint8), (size[1], size[0], 3))
  else:
    array = np.random.default_rng(seed).integers(
        0, 256, (size[1], size[0], 3), dtype=np.uint8)
  Image.fromarray(np.ascontiguousarray(array)).convert(mode).save(path, format=fmt)


def _write_lines(path, lines):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(line + "\n" for line in lines))


def make_clothing1m_tree(root):
  """A Clothing1M release in miniature; returns {split: [(path, label)]}."""
  root = pathlib.Path(root)
  expected = {"noisy_train": [], "clean_val": [], "clean_test": []}
  n = 0
  # Interleave classes, like the real key list.
  queue = [c for i in range(max(C1M_TRAIN_COUNTS)) for c in range(3)
           if i < C1M_TRAIN_COUNTS[c]]
  for c in queue:
    rel = f"images/{n % 10}/{n:02d}/{1000 + n}.jpg"
    _save(root, rel, n, size=(12, 10))
    expected["noisy_train"].append((rel, c))
    n += 1
  for i in range(6):  # clean val; one CMYK JPEG, which TF cannot decode as is
    rel = f"images/{n % 10}/{n:02d}/{1000 + n}.jpg"
    _save(root, rel, n, mode="CMYK" if i == 0 else "RGB")
    expected["clean_val"].append((rel, (i * 5) % 14))
    n += 1
  for i in range(4):  # clean test; a solid PNG named .jpg and a grey JPEG
    rel = f"images/{n % 10}/{n:02d}/{1000 + n}.jpg"
    if i == 0:
      _save(root, rel, n, fmt="PNG", color=(200, 100, 50))
    else:
      _save(root, rel, n, mode="L" if i == 1 else "RGB")
    expected["clean_test"].append((rel, 13 - i))
    n += 1
  for split, name in clothing1m.KEY_LISTS.items():
    _write_lines(root / name, [p for p, _ in expected[split]])
  # The release's kv files also label images outside the key lists.
  noisy = [f"{p} {c}" for p, c in expected["noisy_train"]]
  noisy += ["images/9/99/extra1.jpg 4", f"{expected['clean_val'][1][0]} 7"]
  clean = [f"{p} {c}" for s in ("clean_val", "clean_test")
           for p, c in expected[s]] + ["images/9/99/extra2.jpg 3"]
  _write_lines(root / "noisy_label_kv.txt", noisy)
  _write_lines(root / "clean_label_kv.txt", clean)
  _write_lines(root / "category_names_eng.txt", clothing1m.CLASS_NAMES)
  return expected


def make_webvision_tree(root):
  """Mini-WebVision in miniature (flat ImageNet val + Kaggle ground truth)."""
  root = pathlib.Path(root)
  wnids = webvision.imagenet_wnids()
  expected = {"train": [], "val": [], "imagenet_val": []}
  train_lines, n = [], 0
  for c, count in ((0, 4), (1, 3), (2, 2)):
    for i in range(count):
      rel = f"google/q{c + 1:04d}/{i:08d}.jpg"
      _save(root, rel, 100 + n, size=(10, 9))
      train_lines.append(f"{rel} {c}")
      expected["train"].append((rel, c))
      n += 1
  # Classes >= 50 are not mini-WebVision: listed, never read.
  train_lines.insert(2, "google/q0051/00000000.jpg 50")
  train_lines.append("google/q0121/00000000.jpg 120")
  _write_lines(root / webvision.TRAIN_LIST, train_lines)
  val_lines = []
  for i in range(6):
    name = f"val{i + 1:06d}.jpg"
    _save(root, f"val_images_256/{name}", 200 + i)
    val_lines.append(f"{name} {i % 3}")
    expected["val"].append((f"val_images_256/{name}", i % 3))
  val_lines.insert(3, "val000099.jpg 77")
  _write_lines(root / webvision.VAL_LIST, val_lines)
  _write_lines(root / webvision.SYNSETS, [f"{w} name{i}" for i, w in enumerate(wnids)])
  rows = [("ImageId", "PredictionString")]
  for number, c in ((31, 2), (7, 0), (12, 1), (3, 0), (45, 1), (20, 2), (9, 600)):
    name = f"ILSVRC2012_val_{number:08d}.JPEG"
    _save(root, f"imagenet_val/{name}", 300 + number)
    rows.append((name[:-5], f"{wnids[c]} 1 2 3 4"))
    if c < 50:
      expected["imagenet_val"].append((number, f"imagenet_val/{name}", c))
  with open(root / "imagenet_val" / "LOC_val_solution.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  expected["imagenet_val"] = [(p, c) for _, p, c in sorted(expected["imagenet_val"])]
  return expected


@pytest.fixture(scope="module")
def c1m(tmp_path_factory):
  manual = tmp_path_factory.mktemp("clothing1m_manual")
  expected = make_clothing1m_tree(manual)
  data_dir = tmp_path_factory.mktemp("tfds_c1m")
  builder = clothing1m.builder(data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual), try_download_gcs=False))
  return manual, data_dir, expected


@pytest.fixture(scope="module")
def wv(tmp_path_factory):
  manual = tmp_path_factory.mktemp("webvision_manual")
  expected = make_webvision_tree(manual)
  data_dir = tmp_path_factory.mktemp("tfds_wv")
  webvision.prepare(data_dir, manual)
  return manual, data_dir, expected


def _listed(error) -> str:
  """The list of missing items in a missing-files error (not the instructions)."""
  lines = str(error).splitlines()
  listed = []
  for line in lines[1:]:
    if not line.startswith("    "):
      break
    listed.append(line.strip())
  return "\n".join(listed)


def _records(builder, split):
  return list(builder.as_data_source(split))


# ----------------------------------------------------------------------------
# Builders.
# ----------------------------------------------------------------------------


def test_clothing1m_builder_splits(c1m):
  manual, data_dir, expected = c1m
  builder = clothing1m.builder(data_dir)  # a fresh one, reading the prepared dir
  assert builder.is_prepared()
  assert {s: builder.info.splits[s].num_examples for s in clothing1m.SPLITS} == {
      "noisy_train": 24, "clean_val": 6, "clean_test": 4}
  assert builder.info.features["label"].num_classes == 14
  for split in clothing1m.SPLITS:
    records = _records(builder, split)
    assert [r["index"] for r in records] == list(range(len(expected[split])))
    assert [r["key"].decode() for r in records] == [p for p, _ in expected[split]]
    assert [int(r["label"]) for r in records] == [c for _, c in expected[split]]
    assert builder.info.metadata["tables"][split]["labels"] == [
        c for _, c in expected[split]]
    for r in records:
      assert r["image"].ndim == 3 and r["image"].shape[-1] == 3
  # The noisy label of a clean-val image (7 in noisy_label_kv) is not used.
  assert _records(builder, "clean_val")[1]["label"] == expected["clean_val"][1][1]
  # Bytes kept as released (PNG stays PNG); the CMYK JPEG re-encoded to RGB.
  raw = builder.as_data_source(
      "clean_test", decoders={"image": tfds.decode.SkipDecoding()})
  png_path = manual / expected["clean_test"][0][0]
  assert raw[0]["image"] == png_path.read_bytes()
  assert (raw[1]["image"] == (manual / expected["clean_test"][1][0]).read_bytes())
  cmyk = builder.as_data_source("clean_val")[0]["image"]
  assert cmyk.shape == (8, 8, 3)


def test_clothing1m_missing_files(tmp_path, c1m):
  with pytest.raises(DataNotFoundError) as e:
    clothing1m.check_manual_dir(tmp_path / "nowhere")
  message = str(e.value)
  for name in clothing1m.REQUIRED_FILES + ("images/",):
    assert name in message
  assert "no such folder" in message

  manual, _, expected = c1m
  partial = tmp_path / "partial"
  partial.mkdir()
  for name in ("noisy_label_kv.txt", "clean_label_kv.txt",
               "noisy_train_key_list.txt", "clean_val_key_list.txt"):
    (partial / name).write_bytes((manual / name).read_bytes())
  (partial / "images").mkdir()
  with pytest.raises(DataNotFoundError) as e:
    clothing1m.check_manual_dir(partial)
  message = _listed(e.value)
  assert "clean_test_key_list.txt" in message
  assert "noisy_label_kv.txt" not in message
  # images/ exists but is empty: the first image of each key list is named.
  assert expected["noisy_train"][0][0] in message
  assert expected["clean_val"][0][0] in message

  # Through TFDS and through prepare(): the same error, before any writing.
  data_dir = tmp_path / "tfds"
  with pytest.raises(DataNotFoundError, match="clean_test_key_list.txt"):
    clothing1m.builder(data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(partial), try_download_gcs=False))
  with pytest.raises(DataNotFoundError, match="no manual dir"):
    clothing1m.prepare(data_dir)


def test_webvision_builder_splits(wv):
  manual, data_dir, expected = wv
  builder = webvision.builder(data_dir)
  sizes = {s: builder.info.splits[s].num_examples for s in webvision.SPLITS}
  assert sizes == {"train": 9, "val": 6, "imagenet_val": 6}
  assert builder.info.features["label"].num_classes == 50
  assert builder.info.features["label"].names[0] == "n01440764"
  for split in webvision.SPLITS:
    records = _records(builder, split)
    assert [r["index"] for r in records] == list(range(sizes[split]))
    assert [r["key"].decode() for r in records] == [p for p, _ in expected[split]]
    assert [int(r["label"]) for r in records] == [c for _, c in expected[split]]
  # ImageNet rows are sorted by image number.
  assert [p for p, _ in expected["imagenet_val"]][0].endswith("00000003.JPEG")


def test_webvision_missing_files(tmp_path, wv):
  with pytest.raises(DataNotFoundError) as e:
    webvision.check_manual_dir(tmp_path)
  message = str(e.value)
  for name in (webvision.TRAIN_LIST, webvision.VAL_LIST, "google/",
               "val_images_256/", "imagenet_val/"):
    assert name in message
  manual, _, _ = wv
  partial = tmp_path / "partial"
  (partial / "info").mkdir(parents=True)
  for name in (webvision.TRAIN_LIST, webvision.VAL_LIST):
    (partial / name).write_bytes((manual / name).read_bytes())
  (partial / "google").mkdir()
  (partial / "val_images_256").mkdir()
  (partial / "imagenet_val").mkdir()
  with pytest.raises(DataNotFoundError) as e:
    webvision.check_manual_dir(partial)
  message = _listed(e.value)
  assert "google/q0001/00000000.jpg" in message
  assert "val_images_256/val000001.jpg" in message
  assert "imagenet_val/" not in message
  assert len(message.splitlines()) == 2


def test_imagenet_val_layouts(tmp_path):
  wnids = webvision.imagenet_wnids()
  # 1. One folder per WNID (classes 0 and 49 inside, class 50 ignored).
  a = tmp_path / "a"
  for wnid, number in ((wnids[49], 5), (wnids[0], 8), (wnids[0], 2), (wnids[50], 1)):
    (a / "imagenet_val" / wnid).mkdir(parents=True, exist_ok=True)
    (a / "imagenet_val" / wnid / f"ILSVRC2012_val_{number:08d}.JPEG").touch()
  table = webvision.read_imagenet_val(a)
  assert list(table.paths) == [f"imagenet_val/{wnids[0]}/ILSVRC2012_val_00000002.JPEG",
                               f"imagenet_val/{wnids[49]}/ILSVRC2012_val_00000005.JPEG",
                               f"imagenet_val/{wnids[0]}/ILSVRC2012_val_00000008.JPEG"]
  assert table.labels.tolist() == [0, 49, 0]
  # 2. DivideMix: imagenet/val/<class number>/.
  b = tmp_path / "b"
  for c, name in ((3, "x.JPEG"), (0, "y.JPEG"), (51, "z.JPEG")):
    (b / "imagenet" / "val" / str(c)).mkdir(parents=True, exist_ok=True)
    (b / "imagenet" / "val" / str(c) / name).touch()
  table = webvision.read_imagenet_val(b)
  assert sorted(zip(table.paths, table.labels.tolist())) == [
      ("imagenet/val/0/y.JPEG", 0), ("imagenet/val/3/x.JPEG", 3)]
  # 3. Flat ILSVRC2012_img_val with the ground truth TFDS ships: 50 per class.
  c = tmp_path / "c" / "imagenet_val"
  c.mkdir(parents=True)
  truth = webvision._read_lines(webvision._tfds_imagenet_file("validation_labels.txt"))
  assert len(truth) == 50_000
  first50 = set(wnids[:50])
  wanted = [k + 1 for k, w in enumerate(truth) if w in first50]
  assert len(wanted) == 2_500
  for number in wanted[:-1]:
    (c / f"ILSVRC2012_val_{number:08d}.JPEG").touch()
  with pytest.raises(DataNotFoundError, match=f"ILSVRC2012_val_{wanted[-1]:08d}"):
    webvision.read_imagenet_val(c.parent)
  (c / f"ILSVRC2012_val_{wanted[-1]:08d}.JPEG").touch()
  table = webvision.read_imagenet_val(c.parent)
  assert len(table) == 2_500
  assert np.bincount(table.labels, minlength=50).tolist() == [50] * 50
  # ILSVRC2012_val_00000001 is a sea snake (n01751748), WebVision class 65: out.
  assert 1 not in wanted


# ----------------------------------------------------------------------------
# Streaming.
# ----------------------------------------------------------------------------


def _all(iterator):
  return [dict(b) for b in iterator]


def _train(source, **kwargs):
  args = dict(preprocess=streaming.CLOTHING1M, global_batch_size=4, seed=3,
              epoch=0, process_index=0, process_count=1)
  args.update(kwargs)
  return _all(streaming.make_train_iterator(source, **args))


def test_train_stream_shapes_order_resume(c1m):
  _, data_dir, expected = c1m
  source = streaming.tfds_source(clothing1m.builder(data_dir), "noisy_train")
  batches = _train(source, samples_per_class=4)
  assert len(batches) == 3 == streaming.train_steps_per_epoch(
      source, 4, samples_per_class=4)
  for b in batches:
    assert b["image"].shape == (4, 224, 224, 3) and b["image"].dtype == np.float32
    assert b["label"].dtype == np.int32 and b["index"].dtype == np.int32
    assert sorted(b) == ["image", "index", "label"]
  index = np.concatenate([b["index"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  # Class-balanced: exactly 4 of each class, distinct rows, labels match rows.
  assert np.bincount(labels).tolist() == [4, 4, 4]
  assert len(set(index.tolist())) == 12
  assert labels.tolist() == [expected["noisy_train"][i][1] for i in index]
  # Deterministic in (seed, epoch); a new subset each epoch.
  again = _train(source, samples_per_class=4)
  for b1, b2 in zip(batches, again):
    np.testing.assert_array_equal(b1["index"], b2["index"])
    np.testing.assert_array_equal(b1["image"], b2["image"])
  other = _train(source, samples_per_class=4, epoch=1)
  assert set(np.concatenate([b["index"] for b in other]).tolist()) != set(index.tolist())
  # Resume: start_step=k gives exactly the remaining batches.
  resumed = _train(source, samples_per_class=4, start_step=2)
  assert len(resumed) == 1
  np.testing.assert_array_equal(resumed[0]["index"], batches[2]["index"])
  np.testing.assert_array_equal(resumed[0]["image"], batches[2]["image"])
  assert _train(source, samples_per_class=4, start_step=3) == []
  with pytest.raises(ValueError, match="start_step"):
    _train(source, samples_per_class=4, start_step=4)
  # Without subsampling: every row once per epoch, the remainder dropped.
  full = _train(source, global_batch_size=8)
  assert len(full) == 3
  assert sorted(np.concatenate([b["index"] for b in full]).tolist()) == list(range(24))


def test_train_stream_two_processes_rebuild_global_batch(c1m):
  _, data_dir, _ = c1m
  source = streaming.tfds_source(clothing1m.builder(data_dir), "noisy_train")
  one = _train(source, samples_per_class=4, start_step=1)
  halves = [_train(source, samples_per_class=4, start_step=1,
                   process_index=p, process_count=2) for p in (0, 1)]
  assert len(one) == len(halves[0]) == len(halves[1]) == 2
  for step, b in enumerate(one):
    for key in b:
      np.testing.assert_array_equal(
          np.concatenate([halves[0][step][key], halves[1][step][key]]), b[key])
  with pytest.raises(ValueError, match="multiple of the process count"):
    _train(source, global_batch_size=6, process_count=4)


def test_file_source_matches_tfds_source(c1m):
  manual, data_dir, _ = c1m
  tfds_batches = _train(streaming.tfds_source(clothing1m.builder(data_dir),
                                              "noisy_train"), samples_per_class=4)
  files = clothing1m.sources(manual_dir=manual, from_files=True)
  file_batches = _train(files["noisy_train"], samples_per_class=4)
  for b1, b2 in zip(tfds_batches, file_batches):
    for key in b1:
      np.testing.assert_array_equal(b1[key], b2[key])


def test_crop_flip_and_normalisation_exact(c1m):
  """With resize off, every train crop is a window of the decoded image."""
  manual, data_dir, expected = c1m
  source = streaming.tfds_source(clothing1m.builder(data_dir), "noisy_train")
  small = streaming.Preprocess(crop_size=5, resize=None,
                               mean=streaming.CLOTHING1M_MEAN,
                               std=streaming.CLOTHING1M_STD)
  raw = _train(source, preprocess=small, normalize=False, global_batch_size=8)
  flipped = unflipped = 0
  offsets = set()
  for b in raw:
    assert b["image"].dtype == np.uint8 and b["image"].shape == (8, 5, 5, 3)
    for crop, i in zip(b["image"], b["index"]):
      data = (manual / expected["noisy_train"][i][0]).read_bytes()
      full = tf.io.decode_image(data, channels=3).numpy()  # (10, 12, 3)
      hits = []
      for dy in range(full.shape[0] - 4):
        for dx in range(full.shape[1] - 4):
          window = full[dy:dy + 5, dx:dx + 5]
          if np.array_equal(crop, window):
            hits.append((dy, dx, False))
          if np.array_equal(crop, window[:, ::-1]):
            hits.append((dy, dx, True))
      assert hits, "crop is not a window of the image"
      offsets.add(hits[0][:2])
      flipped += all(h[2] for h in hits)
      unflipped += not any(h[2] for h in hits)
  assert flipped > 0 and unflipped > 0 and len(offsets) > 3
  # flip=False: same windows, never mirrored.
  plain = _train(source, preprocess=small, normalize=False, global_batch_size=8,
                 flip=False)
  for b, p in zip(raw, plain):
    for crop, crop_plain in zip(b["image"], p["image"]):
      assert (np.array_equal(crop, crop_plain)
              or np.array_equal(crop, crop_plain[:, ::-1]))
  # Normalised output = (uint8 / 255 - mean) / std.
  norm = _train(source, preprocess=small, global_batch_size=8)
  mean = np.asarray(streaming.CLOTHING1M_MEAN, np.float32)
  std = np.asarray(streaming.CLOTHING1M_STD, np.float32)
  np.testing.assert_allclose(norm[0]["image"],
                             (raw[0]["image"] / 255.0 - mean) / std, atol=1e-5)


def test_eval_stream_mask_center_crop(c1m):
  manual, data_dir, expected = c1m
  builder = clothing1m.builder(data_dir)
  test = streaming.tfds_source(builder, "clean_test")
  batches = _all(streaming.make_eval_iterator(
      test, preprocess=streaming.CLOTHING1M, global_batch_size=3,
      process_index=0, process_count=1, normalize=False))
  assert len(batches) == 2 == streaming.eval_steps(test, 3)
  index = np.concatenate([b["index"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  assert index.tolist() == [0, 1, 2, 3, 0, 0] and mask.tolist() == [1, 1, 1, 1, 0, 0]
  assert np.concatenate([b["label"] for b in batches])[:4].tolist() == [13, 12, 11, 10]
  # The solid PNG comes out exactly its colour; shape (224, 224, 3).
  assert batches[0]["image"].shape == (3, 224, 224, 3)
  assert (batches[0]["image"][0] == np.array([200, 100, 50], np.uint8)).all()
  # Centre crop, exactly, with resize off.
  val = streaming.tfds_source(builder, "clean_val")
  small = streaming.Preprocess(crop_size=4, resize=None, mean=(0, 0, 0),
                               std=(1, 1, 1))
  out = _all(streaming.make_eval_iterator(val, preprocess=small,
                                          global_batch_size=6,
                                          process_index=0, process_count=1,
                                          normalize=False))[0]
  for crop, i in zip(out["image"][1:], out["index"][1:]):
    full = tf.io.decode_image((manual / expected["clean_val"][i][0]).read_bytes(),
                              channels=3).numpy()
    np.testing.assert_array_equal(crop, full[2:6, 2:6])
  # Shorter-side resize (torchvision Resize(256) style) keeps the aspect ratio.
  png = (manual / expected["clean_test"][0][0]).read_bytes()  # 8 x 8
  wide = tf.io.encode_png(tf.zeros((10, 12, 3), tf.uint8))
  for encoded, size in ((png, (16, 16)), (wide, (16, 19))):
    image = streaming._decode_resize(encoded, streaming.Preprocess(
        crop_size=16, resize=16, mean=(0, 0, 0), std=(1, 1, 1)))
    assert tuple(image.shape[:2]) == size
  # Two processes: blocks of every global batch, same number of steps.
  parts = [_all(streaming.make_eval_iterator(
      test, preprocess=streaming.CLOTHING1M, global_batch_size=4,
      process_index=p, process_count=2)) for p in (0, 1)]
  assert len(parts[0]) == len(parts[1]) == 1
  assert parts[0][0]["index"].tolist() == [0, 1]
  assert parts[1][0]["index"].tolist() == [2, 3]


def test_webvision_stream_crop_227(wv):
  _, data_dir, expected = wv
  srcs = webvision.sources(data_dir)
  batches = _train(srcs["train"], preprocess=streaming.WEBVISION)
  assert len(batches) == 2  # 9 rows, batch 4
  assert batches[0]["image"].shape == (4, 227, 227, 3)
  assert batches[0]["image"].dtype == np.float32
  index = np.concatenate([b["index"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert labels.tolist() == [expected["train"][i][1] for i in index]
  for split in ("val", "imagenet_val"):
    out = _all(streaming.make_eval_iterator(
        srcs[split], preprocess=streaming.WEBVISION, global_batch_size=6,
        process_index=0, process_count=1))
    assert out[0]["image"].shape == (6, 227, 227, 3)
    assert out[0]["label"].tolist() == [c for _, c in expected[split]]
    assert out[0]["mask"].all()


def test_balanced_subset_paper_numbers():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 14, 400_000)
  labels[:14 * 19_000] = np.repeat(np.arange(14), 19_000)  # >= 18,976 each

  class Labels(streaming.Source):
    def __init__(self):
      self.labels = labels.astype(np.int32)
      self.index = np.arange(len(labels), dtype=np.int32)
      self.name = "fake"

  rows = streaming.balanced_subset(labels, clothing1m.SAMPLES_PER_CLASS,
                                   seed=0, epoch=5)
  assert len(rows) == 265_664 == 14 * 18_976
  assert np.bincount(labels[rows]).tolist() == [18_976] * 14
  assert len(np.unique(rows)) == len(rows)
  assert streaming.train_steps_per_epoch(
      Labels(), 32, samples_per_class=clothing1m.SAMPLES_PER_CLASS) == 8_302
  np.testing.assert_array_equal(
      rows, streaming.balanced_subset(labels, 18_976, seed=0, epoch=5))
  assert not np.array_equal(
      np.sort(rows), np.sort(streaming.balanced_subset(labels, 18_976, seed=0, epoch=6)))
  # A class with too few rows contributes all it has.
  few = np.array([0] * 5 + [1] * 2 + [2] * 9)
  sub = streaming.balanced_subset(few, 4, seed=1, epoch=0)
  assert np.bincount(few[sub]).tolist() == [4, 2, 4]


def test_to_global_batch_on_fake_devices(c1m):
  from sgn_jax.training.mesh import create_mesh
  _, data_dir, _ = c1m
  mesh = create_mesh()
  assert mesh.shape["data"] == 8
  source = streaming.tfds_source(clothing1m.builder(data_dir), "noisy_train")
  local = _train(source, global_batch_size=8)[0]
  arrays = streaming.to_global_batch(local, mesh)
  assert arrays["image"].shape == (8, 224, 224, 3)
  for key, value in arrays.items():
    assert value.sharding.spec == P("data")
    assert len(value.addressable_shards) == 8
    assert value.addressable_shards[0].data.shape[0] == 1
    np.testing.assert_array_equal(np.asarray(value), local[key])


def test_imports_without_tensorflow():
  code = ("import sys\n"
          "import sgn_jax.data.streaming, sgn_jax.data.mixup\n"
          "import sgn_jax.data.clothing1m, sgn_jax.data.webvision\n"
          "from sgn_jax.data import clothing1m\n"
          "try:\n"
          "  clothing1m.check_manual_dir('/nonexistent')\n"
          "except clothing1m.DataNotFoundError:\n"
          "  pass\n"
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
          "assert 'tensorflow_datasets' not in sys.modules\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]


# ----------------------------------------------------------------------------
# Mixup.
# ----------------------------------------------------------------------------


def test_mixup_exact_for_fixed_lambda():
  images = jnp.arange(4 * 2 * 2 * 1, dtype=jnp.float32).reshape(4, 2, 2, 1)
  targets = jax.nn.one_hot(jnp.array([0, 1, 2, 1]), 3)
  lam = jnp.array([0.25, 0.5, 0.75, 1.0])
  reverse = jnp.array([3, 2, 1, 0])
  x, t = jax.jit(mixup_lib.mix)(images, targets, lam, reverse)
  x_np, t_np, l_np = np.asarray(images), np.asarray(targets), np.asarray(lam)
  for i in range(4):
    j = 3 - i
    np.testing.assert_allclose(x[i], l_np[i] * x_np[i] + (1 - l_np[i]) * x_np[j])
    np.testing.assert_allclose(t[i], l_np[i] * t_np[i] + (1 - l_np[i]) * t_np[j])
  np.testing.assert_allclose(t[0], [0.25, 0.75, 0.0])
  np.testing.assert_allclose(t[1], [0.0, 0.5, 0.5])
  np.testing.assert_allclose(x[3], images[3])  # lam = 1: unchanged
  # One lam for the batch.
  x, t = mixup_lib.mix(images, targets, 0.3, reverse)
  np.testing.assert_allclose(x, 0.3 * x_np + 0.7 * x_np[::-1], rtol=1e-6)
  # Integer images are mixed in float32; bfloat16 stays bfloat16.
  x, _ = mixup_lib.mix(images.astype(jnp.uint8), targets, lam, reverse)
  assert x.dtype == jnp.float32
  x, _ = mixup_lib.mix(images.astype(jnp.bfloat16), targets, lam, reverse)
  assert x.dtype == jnp.bfloat16


def test_mixup_draws_and_statistics():
  # (jax.random.beta takes seconds to compile on CPU: two compilations only.)
  n = 20_000
  images = jax.random.normal(jax.random.key(1), (n, 2))
  targets = jax.nn.softmax(jax.random.normal(jax.random.key(2), (n, 5)))
  fn = jax.jit(lambda k, x, y: mixup_lib.mixup(k, x, y, 0.8, return_aux=True))
  x, t, lam, idx = fn(jax.random.key(0), images, targets)
  # The authors' form: one lam per example, partner = the batch reversed.
  assert lam.shape == (n,)
  np.testing.assert_array_equal(idx, np.arange(n)[::-1])
  ex, et = mixup_lib.mix(images, targets, lam, idx)
  np.testing.assert_allclose(x, ex, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(t, et, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-5)
  x2, *_ = fn(jax.random.key(0), images, targets)  # same key, same draw
  np.testing.assert_array_equal(x2, x)
  # lam ~ Beta(0.8, 0.8): mean 1/2, variance 1 / (4 (2 alpha + 1)).
  lam = np.asarray(lam, np.float64)
  assert stats.kstest(lam, stats.beta(0.8, 0.8).cdf).pvalue > 1e-3
  assert abs(lam.mean() - 0.5) < 0.01
  assert abs(lam.var() - 1 / (4 * (2 * 0.8 + 1))) < 0.004
  # One lam per batch, random permutation partner, over many keys.
  keys = jax.random.split(jax.random.key(4), 3_000)
  _, _, lam_batch, perms = jax.vmap(lambda k: mixup_lib.mixup(
      k, jnp.zeros((6, 1)), jnp.ones((6, 2)) / 2, 0.8, per_example=False,
      partner="permutation", return_aux=True))(keys)
  assert lam_batch.shape == (3_000,)
  assert (np.sort(np.asarray(perms), axis=1) == np.arange(6)).all()
  assert len({tuple(p) for p in np.asarray(perms).tolist()}) > 100
  assert stats.kstest(np.asarray(lam_batch, np.float64),
                      stats.beta(0.8, 0.8).cdf).pvalue > 1e-3
  key = jax.random.key(0)
  with pytest.raises(ValueError):
    mixup_lib.mixup(key, images, targets, partner="shuffle")
  with pytest.raises(ValueError):
    mixup_lib.mixup(key, images, targets, alpha=0.0)
  with pytest.raises(ValueError):
    mixup_lib.mixup(key, images, targets[:5])
