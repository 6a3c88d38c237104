"""Speed and memory of the generator G at 256² (DESIGN.md §6): the once-per-reference K-shot embedding and the per-frame
generation, for K = 1 and K = 8.

G is built from the preset's ``model`` config with random weights (speed does not depend on training), in eval mode,
folded for inference as the pipeline runs it (:func:`rhythmhead.models.util.fold_for_inference`), under
``torch.no_grad``. ``<name>_embed`` times :meth:`Generator.embed_references` (one reference set, fps = reference
sets per second); ``<name>_frame`` times :meth:`Generator.generate` for consecutive target frames on that embedding
(``need_raw=False``, as at inference), with the warping reference and the 3-D render as inputs. Names are
``generator_<preset>_k<K>_{embed,frame}``. Threads: torch's current setting (``OMP_NUM_THREADS=2`` for the 2-core
target). ``device`` may be ``"cuda"`` (timings synchronised; peak GPU memory reported).
"""
from __future__ import annotations


import torch

FRAMES = {"fast": 20, "paper": 3}


def run(preset: str = "fast", device: str = "cpu", shots: tuple[int, ...] = (1, 8), n_frames: int | None = None
        ) -> dict[str, dict]:
    """``{"generator_<preset>_k<K>_embed": {...}, "generator_<preset>_k<K>_frame": {...}}`` (see bench.common.measure)."""
    from ..config import load_config
    from ..models.generator import Generator
    from ..models.util import fold_for_inference
    from ..training.generator_task import GeneratorConfig, generator_kwargs
    from .common import measure

    cfg = load_config(GeneratorConfig, "generator", preset)
    torch.manual_seed(0)
    gen = fold_for_inference(Generator(**generator_kwargs(cfg)).to(device).eval())
    s = cfg.model.image_size
    n = n_frames or FRAMES.get(preset, 5)
    params = sum(p.numel() for p in gen.parameters())
    rand = lambda *shape: torch.rand(*shape, device=device) * 2 - 1  # noqa: E731
    target = [(rand(1, 1, s, s), rand(1, 3, s, s), rand(1, 1, s, s), rand(1, 3, s, s), rand(1, 1, s, s))
              for _ in range(min(n, 4))]
    out: dict[str, dict] = {}
    common = {"size": s, "threads": torch.get_num_threads(), "preset": preset, "device": str(device),
              "params_m": round(params / 1e6, 3), "ngf": cfg.model.ngf}
    with torch.no_grad():
        for k in shots:
            refs, labels = rand(1, k, 3, s, s), rand(1, k, 1, s, s)
            holder = {}

            def embed():
                holder["emb"] = gen.embed_references(refs, labels)

            def frames():
                for i in range(n):
                    tl, wi, wl, ri, rl = target[i % len(target)]
                    gen.generate(holder["emb"], tl, wi, wl, ri, rl, need_raw=False)

            out[f"generator_{preset}_k{k}_embed"] = {**measure(embed, 1, warmup=1, device=device), **common, "shots": k}
            gen.generate(holder["emb"], *target[0], need_raw=False)  # untimed warm-up frame
            out[f"generator_{preset}_k{k}_frame"] = {**measure(frames, n, device=device), **common, "shots": k}
    return out
