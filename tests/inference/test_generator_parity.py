"""Train/serve parity for G: for the same frames and track, the tensors inference gives G (inference.reference /
inference.stream) are the ones a training sample holds (training.generator_data.make_sample, no augmentation)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rhythmhead.common import CROP
from rhythmhead.data.synthetic import make_synthetic_store
from rhythmhead.geometry.labelmap import mouth_mask
from rhythmhead.inference.reference import label_maps, render_inputs, to_network_images
from rhythmhead.training.generator_data import make_sample, reference_mesh


@pytest.mark.parametrize("size", [128, 64])  # the fast G's side (half the crop), and a 4× reduction
def test_g_reads_the_same_tensors_in_training_and_inference(tmp_path, size):
    store = make_synthetic_store(tmp_path / "store", n_clips=1, n_frames=24, with_audio=False)
    clip = store.ids()[0]
    frames, track = store.frames(clip), store.track(clip)
    mesh, key = reference_mesh(frames, track, ref_fraction=0.25, shots=4)
    refs, target = [0, 2, 4, 5], 17
    sample = make_sample(frames, track, mesh, key, refs, 1, target, image_size=size)

    # the K references and their label maps (inference.reference.prepare)
    torch.testing.assert_close(to_network_images(frames[refs], size), sample["ref_images"], atol=1e-6, rtol=0)
    assert torch.equal(label_maps(track["landmarks"][refs], size), sample["ref_labels"])
    # the target's label map and mouth box (inference.stream.synthesize)
    lmk = np.asarray(track["landmarks"][[target]], np.float32)
    assert torch.equal(label_maps(lmk, size)[0], sample["target_label"])
    box = mouth_mask(torch.from_numpy(lmk[..., :2] * (size / CROP)), size, 0.15)[0]
    assert torch.equal(box.float(), torch.as_tensor(sample["mouth_mask"]).float())
    # the render's label map; the render itself is rasterised at G's size at inference (resized from 256² in
    # training): the same inside the face, a few grey levels on the silhouette
    images, labels, _ = render_inputs(mesh, np.asarray(track["frontal"][key], np.float32),
                                      np.asarray(track["pose"][[target]], np.float32), size, "cpu")
    assert torch.equal(labels[0], sample["render_label"])
    diff = (images[0] - sample["render_image"]).abs() * 127.5
    assert float(diff.mean()) < 3.0, float(diff.mean())
