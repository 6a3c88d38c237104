"""The generator G (REFERENCE.md §5.1–§5.6): a few-shot-vid2vid-style SPADE generator with a hybrid-attention K-shot
embedding, two flow warps (reference → target, 3-D render → target) and a non-linear multi-SPADE composition.

Split by cost, so that the K-shot work runs once per reference set (DESIGN.md §1):

* :meth:`Generator.embed_references` (once): image and landmark encoders over the K references; at the attention level
  the hybrid fusion (cross-modal fusion, self-attention across shots, re-fusion — :class:`~.attention.ShotFusion`);
  encoding on to the bottleneck; the bilinear-pooled per-scale codes (:class:`CombEncoder`); the generated SPADE and
  label-embedding weights of every shot (:class:`WeightGen`); the attention keys of the reference label maps.
* :meth:`Generator.generate` (per frame): the target–reference attention (query of the target label map against the
  keys, softmax over shots) gives a spatial attention map and its per-shot means α; the decoder starts from the
  attention-weighted reference bottleneck and uses the α-weighted mixture of the per-shot generated weights (this mixing
  of per-shot weights, rather than of per-shot features before the weight generator, is what lets the expensive part
  be computed once per reference set); the label embedder on the target label map; the two flow networks and warps;
  the SPADE ResNet decoder, whose two highest-resolution blocks compose non-linearly (or linearly, as an ablation);
  tanh output.

Ablation switches (constructor kwargs): ``attention`` "hybrid" | "mean" (plain mean over shots, no attention modules),
``composition`` "nonlinear" | "linear", ``warp`` (flow networks; without them the unwarped images feed the composition,
and linear composition degenerates to the raw image), ``render3d`` (the 3-D render branch). Modules a setting does not
use are not created.

Shapes (B batch, K shots, H = W = ``image_size``): images ``(B,3,H,W)`` in [−1,1], label maps ``(B,1,H,W)`` in [−1,1],
reference stacks ``(B,K,3,H,W)`` / ``(B,K,1,H,W)``, flows ``(B,2,H,W)`` in pixels (backward; x then y), confidences
``(B,1,H,W)`` in (0,1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.flow import resize_flow, warp as warp_image
from .attention import ShotFusion, TargetAttention
from .flow_net import FlowNet
from .generator_blocks import NORMS, ConvNormAct, LabelEmbedder, SPADEResBlock, sn
from .util import assert_shape


# Supplementary Table 1 ablations → the constructor switches they change ("baseline" = every switch off).
ABLATIONS: dict[str, dict[str, object]] = {
    "none": {},
    "baseline": {"attention": "mean", "composition": "linear", "warp": False, "render3d": False},
    "no_render3d": {"render3d": False},
    "no_attention": {"attention": "mean"},
    "linear_composition": {"composition": "linear"},
    "no_warp": {"warp": False},
}


def apply_ablation(model_kwargs: dict, ablation: str) -> dict:
    """``model_kwargs`` with the switches of ``ablation`` (a key of :data:`ABLATIONS`) applied."""
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r} (known: {', '.join(ABLATIONS)})")
    return {**model_kwargs, **ABLATIONS[ablation]}


def feathered(mask: torch.Tensor, width: int) -> torch.Tensor:
    """A soft version of a binary *box* ``mask (B, 1, H, W)`` (one axis-aligned rectangle per image, as
    :func:`rhythmhead.geometry.labelmap.mouth_mask` makes) that is still 1 everywhere the mask is, and falls to 0 over
    about ``2·width`` pixels outside it (dilated by ``width``, then box-blurred over ``2·width + 1``, edge pixels
    averaged over the image only): the linear composition takes the synthesised image inside the masked mouth box and
    fades to the warped image around it, instead of a visible seam at the box edge.

    A box is the product of its row and column profiles, and dilation and box blur act on each separately, so the
    work is two 1-D passes and one outer product."""
    k = 2 * width + 1
    b = mask.shape[0]

    def soft(profile):  # (B, L) 0/1 → dilated, then blurred
        p = profile.unsqueeze(1)
        p = F.max_pool1d(p, k, 1, width)
        return F.avg_pool1d(p, k, 1, width, count_include_pad=False)[:, 0]

    rows, cols = mask.amax(dim=(1, 3)), mask.amax(dim=(1, 2))  # (B, H), (B, W)
    return torch.maximum(mask, (soft(rows)[:, :, None] * soft(cols)[:, None, :]).view(b, 1, *mask.shape[-2:]))


def linear_compose(raw: torch.Tensor, warped_ref: torch.Tensor | None, conf_ref: torch.Tensor | None,
                   warped_render: torch.Tensor | None, conf_render: torch.Tensor | None) -> torch.Tensor:
    """The linear composition (the ``linear_composition`` ablation, and the ``fast`` G): the synthesised ``raw``
    image where the confidences are high, the warped 3-D render, then the warped reference, where they are low —
    ``c_r·raw + (1 − c_r)·render``, then ``c_ref·that + (1 − c_ref)·ref``. A branch that is None is skipped."""
    image = raw
    if warped_render is not None:
        image = image * conf_render + warped_render * (1 - conf_render)
    if warped_ref is not None:
        image = image * conf_ref + warped_ref * (1 - conf_ref)
    return image


@dataclass
class RefEmbedding:
    """What :meth:`Generator.embed_references` computes once per reference set.

    Attributes:
        bottleneck: reference-image stream at the bottleneck, per shot ``(B, K, C_b, h_b, w_b)``.
        weights: generated weights per shot, name → ``(B, K, rows, cols)``.
        keys: attention keys of the reference label maps ``(B, K, C_a, h_a, w_a)`` (None with ``attention="mean"``).
        codes: the per-scale codes the weights were generated from, ``codes[i] (B, K, C_i, C_b)``.
    """

    bottleneck: torch.Tensor
    weights: dict[str, torch.Tensor]
    keys: torch.Tensor | None
    codes: list[torch.Tensor] | None = None

    def expand(self, batch: int) -> "RefEmbedding":
        """The embedding of one reference set (B = 1) repeated for a batch of ``batch`` targets (views, no copy)."""
        ex = lambda t: None if t is None else t.expand(batch, *t.shape[1:])  # noqa: E731
        return RefEmbedding(ex(self.bottleneck), {k: ex(v) for k, v in self.weights.items()}, ex(self.keys),
                            None if self.codes is None else [ex(c) for c in self.codes])

    @property
    def shots(self) -> int:
        return self.bottleneck.shape[1]


class CombEncoder(nn.Module):
    """Bilinear pooling of the bottleneck image and landmark streams into per-scale codes (REFERENCE.md §5.3 item 3).

    ``code[c, c'] = mean_hw img[c, hw] · softmax_c'(lmk)[c', hw]`` → ``(N, C_b, C_b)``, then a chain of 1×1
    conv-norm-act layers (on the code seen as an ``(N, C_b, C_b, 1)`` image) reduces the rows level by level:
    ``codes[i]`` is ``(N, channels[i], C_b)``; no spatial change.
    """

    def __init__(self, channels: list[int], *, norm: str, spectral: bool):
        super().__init__()
        self.reduce = nn.ModuleList(ConvNormAct(channels[i + 1], channels[i], kernel=1, norm=norm, spectral=spectral)
                                    for i in range(len(channels) - 1))

    def forward(self, img: torch.Tensor, lmk: torch.Tensor) -> list[torch.Tensor]:
        """``img``, ``lmk`` ``(N, C_b, h, w)`` → codes per level, ``codes[i] (N, channels[i], C_b)``."""
        n, c = img.shape[:2]
        code = torch.bmm(img.reshape(n, c, -1), lmk.reshape(n, c, -1).softmax(dim=1).transpose(1, 2))
        code = (code / img[0, 0].numel()).unsqueeze(-1)  # (N, C_b, C_b, 1)
        codes = [None] * (len(self.reduce) + 1)
        codes[-1] = code
        for i in range(len(self.reduce) - 1, -1, -1):
            code = self.reduce[i](code)
            codes[i] = code
        return [cd.squeeze(-1) for cd in codes]


class WeightHead(nn.Module):
    """One generated weight ``(N, rows, cols)`` from a code ``(N, code_rows, code_cols)``: spectral-norm FC layers over
    the code's columns, then a linear mix of its rows; scaled by 1/√cols (fan-in of the 1×1 conv it becomes)."""

    def __init__(self, code_rows: int, code_cols: int, rows: int, cols: int, *, n_fc: int, hidden: int, spectral: bool):
        super().__init__()
        dims = [code_cols] + [hidden] * (n_fc - 1) + [cols]
        layers: list[nn.Module] = []
        for j in range(n_fc):
            layers.append(sn(nn.Linear(dims[j], dims[j + 1]), spectral))
            if j < n_fc - 1:
                layers.append(nn.LeakyReLU(0.2))
        self.fc = nn.Sequential(*layers)
        self.mix = sn(nn.Linear(code_rows, rows), spectral)
        self.scale = 1.0 / math.sqrt(cols)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """``code (N, code_rows, code_cols)`` → ``(N, rows, cols)``."""
        return self.mix(self.fc(code).transpose(1, 2)).transpose(1, 2) * self.scale


class Generator(nn.Module):
    """G. Constructor kwargs are exactly the ``model`` fields of the generator config.

    Args:
        image_size: H = W of every image and label map.
        ngf: width of the first level; level i has ``min(ngf·2^i, max_channels)`` channels.
        n_downsample: stride-2 levels of the encoders (bottleneck at ``image_size / 2^n_downsample``).
        max_channels: cap on the width.
        n_adaptive_layers: decoder / label-embedder levels (from the highest resolution) whose SPADE and embedding
            weights are generated from the references.
        n_fc_layers: FC layers of each weight-generator head.
        fc_hidden: width of those FC layers.
        n_downsample_attn: encoder level at which the hybrid attention works (2 → 64×64 at 256²).
        attn_channels: width of the self-attention queries/keys across shots.
        n_composition_layers: highest-resolution decoder blocks that compose non-linearly (2 in the paper).
        attention: "hybrid" | "mean".
        composition: "nonlinear" | "linear".
        warp: create and use the two flow networks.
        render3d: use the 3-D render branch.
        flow_ngf, flow_n_downsample, flow_n_blocks, flow_max_channels, flow_input_scale: the flow networks
            (see :class:`~.flow_net.FlowNet`).
        norm: "batch" | "instance" (BatchNorm can be converted to SyncBatchNorm under DDP by the training task).
        spectral: spectral norm on the convs and FC layers.
        spade_hidden: hidden width of the fixed SPADE branches.
        spade_kernel: kernel of the SPADE convs (1 in the paper).
    """

    def __init__(self, image_size: int = 256, ngf: int = 32, n_downsample: int = 5, max_channels: int = 1024,
                 n_adaptive_layers: int = 4, n_fc_layers: int = 2, fc_hidden: int = 256, n_downsample_attn: int = 2,
                 attn_channels: int = 32, n_composition_layers: int = 2,
                 attention: Literal["hybrid", "mean"] = "hybrid",
                 composition: Literal["nonlinear", "linear"] = "nonlinear", warp: bool = True, render3d: bool = True,
                 flow_ngf: int = 32, flow_n_downsample: int = 3, flow_n_blocks: int = 6, flow_max_channels: int = 256,
                 flow_input_scale: int = 1, norm: Literal["batch", "instance"] = "batch", spectral: bool = True,
                 spade_hidden: int = 64, spade_kernel: int = 1):
        super().__init__()
        if attention not in ("hybrid", "mean"):
            raise ValueError(f"attention must be 'hybrid' or 'mean', got {attention!r}")
        if composition not in ("nonlinear", "linear"):
            raise ValueError(f"composition must be 'nonlinear' or 'linear', got {composition!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if image_size % (2 ** n_downsample):
            raise ValueError(f"image_size {image_size} is not divisible by 2^n_downsample = {2 ** n_downsample}")
        if not 1 <= n_adaptive_layers <= n_downsample + 1:
            raise ValueError(f"n_adaptive_layers must be in [1, {n_downsample + 1}]")
        if not 0 <= n_downsample_attn <= n_downsample:
            raise ValueError(f"n_downsample_attn must be in [0, {n_downsample}]")
        if not 1 <= n_composition_layers <= n_downsample + 1:
            raise ValueError(f"n_composition_layers must be in [1, {n_downsample + 1}]")
        self.image_size, self.n_downsample = image_size, n_downsample
        self.n_adaptive, self.n_comp, self.attn_level = n_adaptive_layers, n_composition_layers, n_downsample_attn
        self.attention, self.composition, self.use_warp, self.use_render = attention, composition, warp, render3d
        ch = self.channels = [min(ngf * 2 ** i, max_channels) for i in range(n_downsample + 1)]
        kw = dict(norm=norm, spectral=spectral)

        # -- K-shot embedding ------------------------------------------------------------------------------------
        def encoder(cin):
            return nn.ModuleList([ConvNormAct(cin, ch[0], **kw)]
                                 + [ConvNormAct(ch[i - 1], ch[i], stride=2, **kw) for i in range(1, n_downsample + 1)])

        self.enc_img, self.enc_lmk = encoder(3), encoder(1)
        if attention == "hybrid":
            self.fusion = ShotFusion(ch[self.attn_level], attn_channels=attn_channels, **kw)
            self.target_attn = TargetAttention(ch[:self.attn_level + 1], **kw)
        self.comb = CombEncoder(ch, **kw)

        # -- per-frame networks -----------------------------------------------------------------------------------
        self.label_embed = LabelEmbedder(1, ch, n_adaptive=n_adaptive_layers, decoder=True, **kw)
        # Which conditions the composition blocks see (landmarks always first).
        self.nonlinear_ref = composition == "nonlinear"
        self.nonlinear_render = composition == "nonlinear" and render3d
        self.linear_ref = composition == "linear" and warp
        self.linear_render = composition == "linear" and warp and render3d
        comp_in = 4 if warp else 3  # warped image + confidence, or the unwarped image
        if self.nonlinear_ref:
            self.embed_ref = LabelEmbedder(comp_in, ch[:n_composition_layers], decoder=False, **kw)
        if self.nonlinear_render:
            self.embed_render = LabelEmbedder(comp_in, ch[:n_composition_layers], decoder=False, **kw)
        flow_kw = dict(ngf=flow_ngf, n_downsample=flow_n_downsample, n_blocks=flow_n_blocks,
                       max_channels=flow_max_channels, input_scale=flow_input_scale, **kw)
        if warp and (self.nonlinear_ref or self.linear_ref):
            self.flow_ref = FlowNet(5, **flow_kw)
        if warp and (self.nonlinear_render or self.linear_render):
            self.flow_render = FlowNet(5, **flow_kw)

        up = []
        for i in range(n_downsample + 1):
            fin, fout = ch[min(i + 1, n_downsample)], ch[i]
            conds = [ch[i]]
            if i < n_composition_layers:
                conds += [ch[i]] * (int(self.nonlinear_ref) + int(self.nonlinear_render))
            up.append(SPADEResBlock(fin, fout, conds, adaptive=i < n_adaptive_layers, spade_hidden=spade_hidden,
                                    spade_kernel=spade_kernel, **kw))
        self.up = nn.ModuleList(up)
        self.conv_img = nn.Conv2d(ch[0], 3, 3, 1, 1)

        # -- weight generator: one head per generated weight ------------------------------------------------------
        self.weight_shapes: dict[str, tuple[int, int, int]] = {}  # name → (level, rows, cols)
        for name, (r, c) in self.label_embed.weight_shapes().items():
            lvl = int(name.removeprefix("level"))
            self.weight_shapes[f"embed{lvl}"] = (lvl, r, c)
        for i in range(n_adaptive_layers):
            for name, (r, c) in self.up[i].weight_shapes().items():
                self.weight_shapes[f"up{i}_{name}"] = (i, r, c)
        self.weight_gen = nn.ModuleDict({
            name: WeightHead(ch[lvl], ch[-1], r, c, n_fc=n_fc_layers, hidden=fc_hidden, spectral=spectral)
            for name, (lvl, r, c) in self.weight_shapes.items()})

    # ---------------------------------------------------------------------------------------------------------------
    def embed_references(self, ref_images: torch.Tensor, ref_labels: torch.Tensor) -> RefEmbedding:
        """The once-per-reference-set part.

        Args:
            ref_images: ``(B, K, 3, H, W)`` in [−1, 1].
            ref_labels: ``(B, K, 1, H, W)`` label maps of the references.

        Returns: a :class:`RefEmbedding`.
        """
        s = self.image_size
        assert_shape(ref_images, [None, None, 3, s, s], "ref_images")
        b, k = ref_images.shape[:2]
        assert_shape(ref_labels, [b, k, 1, s, s], "ref_labels")
        x_img, x_lmk = ref_images.reshape(b * k, 3, s, s), ref_labels.reshape(b * k, 1, s, s)
        for i, (layer_img, layer_lmk) in enumerate(zip(self.enc_img, self.enc_lmk)):
            x_img, x_lmk = layer_img(x_img), layer_lmk(x_lmk)
            if i == self.attn_level and self.attention == "hybrid":
                fi, fl = self.fusion(x_img.reshape(b, k, *x_img.shape[1:]), x_lmk.reshape(b, k, *x_lmk.shape[1:]))
                x_img, x_lmk = fi.reshape(b * k, *fi.shape[2:]), fl.reshape(b * k, *fl.shape[2:])
        codes = [c.reshape(b, k, *c.shape[1:]) for c in self.comb(x_img, x_lmk)]
        keys = self.target_attn.keys(ref_labels) if self.attention == "hybrid" else None
        return RefEmbedding(bottleneck=x_img.reshape(b, k, *x_img.shape[1:]), weights=self.generate_weights(codes),
                            keys=keys, codes=codes)

    def generate_weights(self, codes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weight generator alone: per-shot codes ``codes[i] (B, K, C_i, C_b)`` → name → ``(B, K, rows, cols)``.
        (Test-time fine-tuning trains these heads on cached codes.)"""
        weights = {}
        for name, head in self.weight_gen.items():
            code = codes[self.weight_shapes[name][0]]
            w = head(code.reshape(-1, *code.shape[2:]))
            weights[name] = w.reshape(*code.shape[:2], *w.shape[1:])
        return weights

    def _warp_branch(self, net_name, target_label, src_image, src_label, mouth_mask):
        """Flow + warp of one source (or the unwarped source without warping); mouth box set to −1."""
        if src_image is None:
            raise ValueError(f"this generator needs the {net_name.removeprefix('flow_')} image and label")
        flow = conf = None
        if self.use_warp:
            flow, conf = getattr(self, net_name)(target_label, src_label, src_image)
            warped = warp_image(src_image, flow)
        else:
            warped = src_image
        if mouth_mask is not None:
            warped = torch.where(mouth_mask > 0.5, torch.full_like(warped, -1.0), warped)
            if conf is not None and self.composition == "linear":
                conf = torch.maximum(conf, feathered(mouth_mask, max(1, self.image_size // 64)))
        return flow, conf, warped

    def generate(self, embedding: RefEmbedding, target_label: torch.Tensor,
                 warp_ref_image: torch.Tensor | None = None, warp_ref_label: torch.Tensor | None = None,
                 render_image: torch.Tensor | None = None, render_label: torch.Tensor | None = None,
                 mouth_mask: torch.Tensor | None = None, need_raw: bool = True) -> dict[str, torch.Tensor | None]:
        """The per-frame part.

        Args:
            embedding: from :meth:`embed_references` (batch B, K shots).
            target_label: ``(B, 1, H, W)`` label map of the target landmarks.
            warp_ref_image, warp_ref_label: the warping reference ``(B, 3, H, W)``, ``(B, 1, H, W)``.
            render_image, render_label: the 3-D render at the target pose and its label map (same shapes); needed
                only when ``render3d``.
            mouth_mask: optional ``(B, 1, H, W)``, 1 in the target's mouth box: the warped inputs are set to −1 there
                (``--crop_ref``), so the mouth must come from the landmark-conditioned synthesis.
            need_raw: also decode the "raw" image (landmark conditioning only in the composition blocks; training
                loss). In linear composition the raw image is computed anyway.

        Returns: dict with ``image (B,3,H,W)`` (tanh range), ``raw`` (or None), ``flow_ref``, ``conf_ref``,
        ``flow_render``, ``conf_render``, ``warped_ref``, ``warped_render`` (None where a branch is off),
        ``ref_idx (B,)`` (shot with the most attention), ``attention (B, K)`` (per-shot attention mass).
        """
        s = self.image_size
        b = target_label.shape[0]
        assert_shape(target_label, [b, 1, s, s], "target_label")
        for name, t, c in (("warp_ref_image", warp_ref_image, 3), ("warp_ref_label", warp_ref_label, 1),
                           ("render_image", render_image, 3), ("render_label", render_label, 1),
                           ("mouth_mask", mouth_mask, 1)):
            if t is not None:
                assert_shape(t, [b, c, s, s], name)
        k = embedding.shots

        # 1. Target–reference attention → spatial attention at the bottleneck and per-shot mass α.
        if self.attention == "hybrid":
            attn = self.target_attn(embedding.keys, target_label)  # (B, K, h_a, w_a)
            alpha = attn.mean(dim=(2, 3))
            attn_b = F.avg_pool2d(attn, 2 ** (self.n_downsample - self.attn_level))
            x = (attn_b.unsqueeze(2) * embedding.bottleneck).sum(1)
        else:
            alpha = target_label.new_full((b, k), 1.0 / k)
            x = embedding.bottleneck.mean(1)
        weights = {name: torch.einsum("bk,bkrc->brc", alpha, w) for name, w in embedding.weights.items()}

        # 2. Label embedding of the target landmarks (with generated weights).
        label_feats = self.label_embed(target_label, {f"level{i}": weights[f"embed{i}"] for i in range(self.n_adaptive)})

        # 3. Warps.
        out: dict[str, torch.Tensor | None] = dict.fromkeys(
            ("raw", "flow_ref", "conf_ref", "flow_render", "conf_render", "warped_ref", "warped_render"))
        ref_feats = render_feats = None
        if self.nonlinear_ref or self.linear_ref:
            out["flow_ref"], out["conf_ref"], out["warped_ref"] = self._warp_branch(
                "flow_ref", target_label, warp_ref_image, warp_ref_label, mouth_mask)
        if self.nonlinear_render or self.linear_render:
            out["flow_render"], out["conf_render"], out["warped_render"] = self._warp_branch(
                "flow_render", target_label, render_image, render_label, mouth_mask)
        if self.nonlinear_ref:
            inp = out["warped_ref"] if out["conf_ref"] is None else torch.cat([out["warped_ref"], out["conf_ref"]], 1)
            ref_feats = self.embed_ref(inp)
        if self.nonlinear_render:
            inp = out["warped_render"] if out["conf_render"] is None else torch.cat(
                [out["warped_render"], out["conf_render"]], 1)
            render_feats = self.embed_render(inp)

        # 4. Decoder.
        def block_weights(i):
            prefix = f"up{i}_"
            return {n.removeprefix(prefix): w for n, w in weights.items() if n.startswith(prefix)}

        def conds(i, drop):
            c = [label_feats[i]]
            if i < self.n_comp:
                if ref_feats is not None:
                    c.append(None if drop else ref_feats[i])
                if render_feats is not None:
                    c.append(None if drop else render_feats[i])
            return c

        x_comp = None
        for i in range(self.n_downsample, -1, -1):
            if i < self.n_downsample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            if i == self.n_comp - 1:
                x_comp = x
            x = self.up[i](x, conds(i, False), block_weights(i))
        image = torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))

        # 5. Composition.
        if self.composition == "linear":
            out["raw"] = image
            image = linear_compose(image, out["warped_ref"], out["conf_ref"], out["warped_render"], out["conf_render"])
        elif need_raw:
            x = x_comp
            for i in range(self.n_comp - 1, -1, -1):
                if i < self.n_comp - 1:
                    x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = self.up[i](x, conds(i, True), block_weights(i))
            out["raw"] = torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
        out["image"] = image
        out["attention"] = alpha
        out["ref_idx"] = alpha.argmax(dim=1)
        return out

    @property
    def composes_linearly(self) -> bool:
        """Whether :meth:`compose` can redo this G's composition at another resolution (linear composition with
        warping: the output is the synthesised image and the warped sources blended by confidences)."""
        return self.composition == "linear" and self.use_warp

    def compose(self, out: dict[str, torch.Tensor | None], ref_image: torch.Tensor,
                render_image: torch.Tensor | None = None, mouth_mask: torch.Tensor | None = None,
                synth_mask: torch.Tensor | None = None, render_cover: torch.Tensor | None = None) -> torch.Tensor:
        """The linear composition of :meth:`generate`, redone at the resolution of the given sources.

        G estimates its flows and confidences and synthesises ``raw`` at its own size; here the flows are resized to
        the sources' size, the *full-resolution* sources are warped by them, and ``raw`` and the confidences are
        upsampled: every pixel the warps explain keeps the sources' own detail, and only what G synthesises (where its
        confidence is high: the mouth box, disocclusions) is as soft as G's resolution. The reference is warped
        bicubically (bilinear sampling at sub-pixel offsets costs a third of the fine detail: measured on a photo,
        variance of the Laplacian 0.64 vs 0.82 of the reference), the render bilinearly, with ``border`` padding; with
        that difference, at G's own size and with the same sources, this is ``out["image"]``.

        Args:
            out: what :meth:`generate` returned (``raw``, ``flow_*``, ``conf_*``).
            ref_image: ``(B, 3, H, W)`` the warping reference at the output size, in [−1, 1].
            render_image: ``(B, 3, H, W)`` the 3-D render at the output size (needed when ``render3d``).
            mouth_mask: ``(B, 1, H, W)`` the target's mouth box at the output size (as given to :meth:`generate`).
            synth_mask: optional ``(B, 1, H, W)`` in [0, 1], where G may synthesise at all: the reference branch's
                confidence is multiplied by it, so that outside it (background, torso, far from the head) the output
                is the warped reference alone.
            render_cover: optional ``(B, 1, H, W)`` in [0, 1], the render's coverage: where it falls to 0 the render
                branch falls back to the warped reference (instead of the render's black background, whose edge,
                upsampled from G's size, would show as steps).

        Returns: ``(B, 3, H, W)`` in [−1, 1].
        """
        if not self.composes_linearly:
            raise ValueError("compose needs a generator with linear composition and warping")
        size = tuple(ref_image.shape[-2:])
        up = lambda t: None if t is None else (t if tuple(t.shape[-2:]) == size else F.interpolate(  # noqa: E731
            t, size=size, mode="bilinear", align_corners=False))

        # confidence 1 in the mouth box: the warped pixels there have weight 0 (not set to −1)
        box = None if mouth_mask is None else feathered(mouth_mask, max(1, size[0] // 64))

        def branch(image, flow, conf, mode):
            if image is None or flow is None:
                return None, None
            warped = warp_image(image, resize_flow(flow, size), mode=mode, padding_mode="border")
            conf = up(conf)
            return warped, (conf if box is None else torch.maximum(conf, box))

        warped_ref, conf_ref = branch(ref_image, out["flow_ref"], out["conf_ref"], "bicubic")
        if synth_mask is not None and conf_ref is not None:
            conf_ref = conf_ref * synth_mask
        # the render branch shows only around the face (the face itself comes from the render unwarped): bilinear;
        # its coverage is warped with it (one more channel of the same lookup)
        if render_cover is not None and render_image is not None:
            render_image = torch.cat([render_image, render_cover.to(render_image)], 1)
        warped_render, conf_render = branch(render_image, out["flow_render"], out["conf_render"], "bilinear")
        if render_cover is not None and warped_render is not None:
            warped_render, cover = warped_render[:, :3], warped_render[:, 3:]
            warped_render = warped_render * cover + warped_ref * (1 - cover)
        return linear_compose(up(out["raw"]), warped_ref, conf_ref, warped_render, conf_render).clamp(-1, 1)

    def forward(self, ref_images: torch.Tensor, ref_labels: torch.Tensor, target_label: torch.Tensor,
                warp_ref_image: torch.Tensor | None = None, warp_ref_label: torch.Tensor | None = None,
                render_image: torch.Tensor | None = None, render_label: torch.Tensor | None = None,
                mouth_mask: torch.Tensor | None = None, need_raw: bool = True) -> dict[str, torch.Tensor | None]:
        """:meth:`embed_references` then :meth:`generate` (shapes as documented there)."""
        return self.generate(self.embed_references(ref_images, ref_labels), target_label, warp_ref_image,
                             warp_ref_label, render_image, render_label, mouth_mask=mouth_mask, need_raw=need_raw)
