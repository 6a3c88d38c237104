"""Composition at the output resolution (Generator.compose): G's flows and confidences, the sources' own pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rhythmhead.geometry.flow import resize_flow
from rhythmhead.geometry.labelmap import mouth_mask
from rhythmhead.inference.random_bundle import TINY_GENERATOR
from rhythmhead.models.generator import Generator


@pytest.fixture(scope="module")
def gen_out():
    torch.manual_seed(0)
    g = Generator(**{**TINY_GENERATOR, "composition": "linear"}).eval()
    s = g.image_size
    imgs = torch.rand(2, 1, 3, s, s) * 2 - 1
    labels = torch.rand(2, 1, 1, s, s) * 2 - 1
    with torch.no_grad():
        out = g(imgs, labels, labels[:, 0], imgs[:, 0], labels[:, 0], imgs[:, 0], labels[:, 0], need_raw=False)
    return g, out


def _smooth_image(size, seed=0):
    torch.manual_seed(seed)
    return F.interpolate(torch.rand(2, 3, 8, 8) * 1.6 - 0.8, size=(size, size), mode="bilinear", align_corners=False)


def test_zero_flow_and_confidence_give_the_full_resolution_source(gen_out):
    g, out = gen_out
    out = dict(out, flow_ref=torch.zeros_like(out["flow_ref"]), flow_render=torch.zeros_like(out["flow_render"]),
               conf_ref=torch.zeros_like(out["conf_ref"]), conf_render=torch.zeros_like(out["conf_render"]))
    ref, render = _smooth_image(256, 1), _smooth_image(256, 2)
    img = g.compose(out, ref, render)
    assert img.shape == (2, 3, 256, 256)
    assert torch.allclose(img, ref, atol=1e-5)  # the reference's own pixels, not G's 64² frame
    # confidence 1 on the reference branch, 0 on the render: the full-resolution render
    out1 = dict(out, conf_ref=torch.ones_like(out["conf_ref"]))
    assert torch.allclose(g.compose(out1, ref, render), render, atol=1e-5)
    # the mouth box is synthesised: G's raw image (upsampled) there, the source away from it
    mask = torch.zeros(2, 1, 256, 256)
    mask[:, :, 160:200, 96:160] = 1
    img = g.compose(out, ref, render, mask)
    raw = F.interpolate(out["raw"], size=(256, 256), mode="bilinear", align_corners=False)
    assert torch.allclose(img[..., 160:200, 96:160], raw[..., 160:200, 96:160].clamp(-1, 1), atol=1e-5)
    assert torch.allclose(img[..., :120, :], ref[..., :120, :], atol=1e-5)


def test_a_known_flow_moves_the_full_resolution_pixels(gen_out):
    g, out = gen_out
    s = g.image_size
    shift = torch.zeros(2, 2, s, s)
    shift[:, 0] = 2.0  # every pixel samples the reference 2 G-pixels to the right
    out = dict(out, flow_ref=shift, conf_ref=torch.zeros_like(out["conf_ref"]))
    ref = _smooth_image(256, 3)
    img = g.compose(out, ref, _smooth_image(256, 4))
    k = 256 // s * 2  # = the same 2 px in output pixels
    assert torch.allclose(img[..., :, : 256 - k - 4], ref[..., :, k: 256 - 4], atol=2e-3)
    assert torch.allclose(resize_flow(shift, 256)[:, 0], torch.full((2, 256, 256), float(k)))


def test_at_its_own_size_compose_is_generate(gen_out):
    g, out = gen_out
    s = g.image_size
    ref, render = _smooth_image(s, 5), _smooth_image(s, 6)
    mask = torch.zeros(2, 1, s, s)
    mask[:, :, 40:50, 24:40] = 1
    with torch.no_grad():
        ref_out = g.generate(*_embed(g, s), ref, torch.zeros(2, 1, s, s), render, torch.zeros(2, 1, s, s),
                             mouth_mask=mask, need_raw=False)
    composed = g.compose(ref_out, ref, render, mask)
    # equal but for the warps' interpolation (bicubic here, bilinear inside G) at G's sub-pixel flows
    assert (composed - ref_out["image"].clamp(-1, 1)).abs().mean() < 0.02


def _embed(g, s):
    torch.manual_seed(1)
    imgs = torch.rand(2, 1, 3, s, s) * 2 - 1
    labels = torch.rand(2, 1, 1, s, s) * 2 - 1
    with torch.no_grad():
        return g.embed_references(imgs, labels), labels[:, 0]


def test_the_render_at_any_size_is_one_lookup():
    """The uv maps of the 256² render, resized, sample a 512² texture as a render made at 512² would."""
    from rhythmhead.face.landmarks import canonical_mesh_478
    from rhythmhead.geometry.mesh import build_textured_mesh, render_textured, render_uv, sample_uv

    rng = np.random.default_rng(0)
    import cv2

    tex512 = cv2.GaussianBlur(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), (0, 0), 3)
    tex256 = cv2.resize(tex512, (256, 256), interpolation=cv2.INTER_AREA)
    verts = canonical_mesh_478().astype(np.float32)
    pose = np.zeros(6, np.float32)
    target = np.array([0.0, 0.15, 0.03, 2.0, -1.0, 0.0], np.float32)  # a 9° turn
    mesh = build_textured_mesh(tex256, verts, pose)
    uv, cover, _ = render_uv(mesh, target, 256)
    hi = sample_uv(torch.from_numpy(tex512), uv, cover, 512, uv_scale=2.0).numpy()
    verts2 = verts.copy()
    verts2 *= 2
    mesh2 = build_textured_mesh(tex512, verts2, pose)
    direct, cover2 = render_textured(mesh2, target * np.array([1, 1, 1, 2, 2, 2], np.float32), 512)
    both = cover2.numpy() & (hi.max(-1) > 0)
    inner = cv2.erode(both.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert inner.sum() > 50000
    assert np.abs(hi[inner].astype(int) - direct.numpy()[inner]).mean() < 2.0
    # and the 256² render itself is unchanged by the split into render_uv + sample_uv
    img, _ = render_textured(mesh, target, 256)
    assert np.array_equal(img.numpy(), sample_uv(mesh.texture, uv, cover).numpy())


def test_supersampled_lookup_keeps_the_detail_a_single_lookup_loses():
    """Under a sub-pixel turn, one bicubic lookup per pixel of a sharp texture loses a good part of its Laplacian
    variance; looked up 2 × 2 per pixel in a texture of twice the side and area-averaged it keeps it, and it is the
    same picture (within a grey level or two of the 1× lookup's low frequencies)."""
    import cv2

    from rhythmhead.face.landmarks import canonical_mesh_478
    from rhythmhead.geometry.mesh import build_textured_mesh, render_uv, sample_uv

    rng = np.random.default_rng(1)
    tex512 = cv2.GaussianBlur(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), (0, 0), 0.8)
    tex256 = cv2.resize(tex512, (256, 256), interpolation=cv2.INTER_AREA)
    mesh = build_textured_mesh(tex256, canonical_mesh_478().astype(np.float32), np.zeros(6, np.float32))
    target = np.array([0.0, 0.05, 0.01, 0.37, -0.61, 0.0], np.float32)  # a small turn, a sub-pixel shift
    uv, cover, face = render_uv(mesh, target, 128, scale=0.5)  # rasterised at G's size, as the pipeline does
    one = sample_uv(torch.from_numpy(tex256), uv, cover, 256, uv_scale=1.0, mode="bicubic").numpy()
    two = sample_uv(torch.from_numpy(tex512), uv, cover, 256, uv_scale=2.0, mode="bicubic", supersample=2).numpy()
    inner = cv2.erode(((one.max(-1) > 0) & (two.max(-1) > 0)).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    assert inner.sum() > 10000

    def lapvar(img):
        lap = cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64), cv2.CV_64F)
        return lap[inner].var()

    real = lapvar(tex256)  # the texture itself, over (about) the same pixels
    assert lapvar(one) < 0.85 * real
    assert lapvar(two) > 0.9 * real
    blur = lambda im: cv2.GaussianBlur(im, (0, 0), 2.0).astype(int)  # noqa: E731
    assert np.abs(blur(one)[inner] - blur(two)[inner]).mean() < 2.0
