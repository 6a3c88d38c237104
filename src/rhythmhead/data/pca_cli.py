"""``rhythmhead fit-pca``: fit the expression PCA of Ψ on a clip store and write it as safetensors."""
from __future__ import annotations

import click

from ..errors import InputError


@click.command("fit-pca")
@click.argument("store", type=click.Path(file_okay=False), metavar="STORE")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Output .safetensors file.")
@click.option("--components", type=click.IntRange(1, 136), default=20, show_default=True,
              help="Number of PCA coefficients.")
@click.option("--speakers", type=click.Choice(["train", "all"]), default="train", show_default=True,
              help="Fit on the training speakers of the default speaker split, or on every clip.")
@click.option("--val-fraction", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Speaker split: fraction of speakers held out (must match the training config's data.val_fraction).")
@click.option("--seed", type=int, default=0, show_default=True, help="Speaker split seed (data.split_seed).")
@click.option("--folds", type=click.IntRange(min=0), default=0, show_default=True, metavar="K",
              help="Speaker-disjoint K-fold split instead of --val-fraction (data.folds); 'train' = every fold but "
                   "--fold.")
@click.option("--fold", type=click.IntRange(min=0), default=0, show_default=True, metavar="F",
              help="The held-out fold with --folds (data.fold).")
def fit_pca(store: str, out: str, components: int, speakers: str, val_fraction: float, seed: int, folds: int,
            fold: int) -> None:
    """Fit the expression PCA (frontal 2-D landmarks, identity removed) on STORE.

    \b
    Examples:
      rhythmhead fit-pca /work/store --out expression_pca.safetensors
      rhythmhead train expression --data /work/store --out runs/expr --set data.pca=expression_pca.safetensors
      rhythmhead fit-pca /work/store --folds 5 --fold 2 --out pca_fold2.safetensors
    """
    from .pca import ExpressionPCA
    from .store import ClipStore, fold_split, speaker_split

    clip_store = ClipStore(store)
    records = clip_store.manifest()
    if fold and not folds:
        raise InputError("--fold needs --folds")
    if speakers == "all":
        ids = [r["id"] for r in records]
    elif folds:
        ids = fold_split(records, folds, fold, seed)[0]
    else:
        ids = speaker_split(records, val_fraction=val_fraction, seed=seed)[0]
    frontal = [clip_store.track(i)["frontal"] for i in ids]
    n_frames = sum(len(f) for f in frontal)
    if n_frames < components:
        raise InputError(f"only {n_frames} frames in the chosen clips, fewer than --components {components}", store)
    pca = ExpressionPCA.fit(frontal, n_components=components)
    pca.save(out)
    var = pca.explained_variance
    click.echo(f"fitted {components} components on {len(ids)} clips ({n_frames} frames); "
               f"first 5 std (px): {', '.join(f'{v ** 0.5:.2f}' for v in var[:5])}; wrote {out}")
