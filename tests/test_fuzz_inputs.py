"""A table of bad inputs run in-process through ``generate``, ``preprocess``, ``train`` and ``evaluate`` (every CI run).

The contract for every row: exit status 2; exactly one stderr line, starting with ``error:``, that contains the row's
phrases (the file or value it is about, and what is wrong); no traceback; and nothing left behind: the folders the run
could write to (the test's own folder, the shared bundle, store and media) hold exactly what they held before, so there
is no output file, no hidden temporary file (``.NAME.*.tmp*``) and no partial store, run or report.

The test ids are the table (``pytest tests/test_fuzz_inputs.py -v``). Every row must fail fast: nothing here trains,
preprocesses or generates for real (train rows pass ``--max-steps 1`` so that a value let through costs one step).
Rows that fail in code owned elsewhere are marked ``xfail(strict=True)``, so they turn red once fixed.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import click
import click.core
import numpy as np
import pytest


PHOTO = Path(str(resources.files("rhythmhead") / "assets" / "demo_photo.png"))
SPEECH = Path(str(resources.files("rhythmhead") / "assets" / "demo_speech.wav"))
RATE = 16000


# --------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> dict[str, Path]:
    """Good inputs shared by every row: a tiny random bundle, 1.2 s of speech, a 0.4 s talking video, a 4-clip store."""
    from rhythmhead.data.synthetic import make_synthetic_store
    from rhythmhead.inference.random_bundle import write_random_bundle
    from rhythmhead.media.io import VideoWriter, load_audio, read_image, write_wav

    root = tmp_path_factory.mktemp("fuzz_shared")
    bundle = write_random_bundle(root / "bundle", "tiny", ablations=())
    wave = load_audio(SPEECH, RATE)
    speech = root / "media" / "speech.wav"
    write_wav(speech, wave[int(0.9 * RATE): int(2.1 * RATE)], RATE)
    video = root / "media" / "talk.mp4"
    with VideoWriter(video, fps=25, audio=wave[: RATE], sample_rate=RATE, preset="ultrafast") as writer:
        frame = read_image(PHOTO)
        for _ in range(10):
            writer.write(frame)
    store = root / "store"
    make_synthetic_store(store, n_clips=4, n_frames=40, n_speakers=2)
    return {"root": root, "bundle": bundle, "speech": speech, "video": video, "store": store}


class Inputs:
    """What a row's argv builder gets: the good shared inputs and helpers that write bad files into ``tmp``."""

    def __init__(self, tmp: Path, shared: dict[str, Path]):
        self.tmp = tmp
        self.bundle, self.speech, self.video, self.store = (shared[k] for k in ("bundle", "speech", "video", "store"))
        self.out = tmp / "out.mp4"
        self.report = tmp / "report.json"
        self.run = tmp / "run"

    def file(self, name: str, data: bytes | str = b"") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def folder(self, name: str, *files: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        for f in files:
            (path / f).write_text("not what it should be\n")
        return path

    def truncated(self, src: Path, name: str, keep: float = 0.3) -> Path:
        data = src.read_bytes()
        return self.file(name, data[: int(len(data) * keep)])

    def wav(self, name: str, wave: np.ndarray, subtype: str = "PCM_16") -> Path:
        import soundfile

        path = self.tmp / name
        soundfile.write(str(path), np.asarray(wave, np.float32), RATE, subtype=subtype, format="WAV")
        return path

    def grey_png(self, name: str = "wall.png") -> Path:
        from PIL import Image

        path = self.tmp / name
        Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(path)
        return path

    def npy(self, name: str, array: np.ndarray) -> Path:
        np.save(self.tmp / name, array)
        return self.tmp / name

    def jobs(self, *lines: dict | str) -> Path:
        text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
        return self.file("jobs.jsonl", text)

    def job(self, **extra) -> dict:
        return {"reference": str(PHOTO), "audio": str(self.speech), "out": str(self.out), **extra}

    def bundle_copy(self, damage: Callable[[Path], None]) -> Path:
        copy = Path(shutil.copytree(self.bundle, self.tmp / "models"))
        damage(copy)
        return copy

    # ---- base command lines, each good except for what a row changes
    def generate(self, reference: Path | str = PHOTO, audio: Path | str | None = None, out: Path | str | None = None,
                 *extra: str, models: Path | str | None = None) -> list[str]:
        return ["generate", "--reference", str(reference), "--audio", str(audio or self.speech),
                "--out", str(out or self.out), "--models", str(models or self.bundle), "-q", *extra]

    def generate_jobs(self, jobs: Path) -> list[str]:
        return ["generate", "--models", str(self.bundle), "--jobs", str(jobs), "-q"]

    def preprocess(self, *inputs: Path | str, out: Path | str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
        return ["preprocess", *(str(i) for i in inputs or (self.video,)), "--out", str(out or self.tmp / "new_store"),
                "--no-progress", *extra]

    def train(self, *extra: str, stage: str = "motion", data: Path | str | None = None,
              out: Path | str | None = None) -> list[str]:
        return ["train", stage, "--data", str(data or self.store), "--out", str(out or self.run), "--device", "cpu",
                *extra]

    def evaluate(self, sub: str, *extra: str, data: Path | str | None = None, out: Path | str | None = None,
                 models: Path | str | None | bool = None) -> list[str]:
        argv = ["evaluate", sub, "--data", str(data or self.store), "--out", str(out or self.report)]
        if models is not False:
            argv += ["--models", str(models or self.bundle / f"{sub}.safetensors")]
        return [*argv, *extra]


def nan_wave() -> np.ndarray:
    wave = 0.3 * np.sin(np.arange(RATE) / 5.0)
    wave[RATE // 2: RATE // 2 + 100] = np.nan
    return wave


def corrupt(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(b"\x00" * 64)


def jsonl_damage(f: Inputs) -> Path:
    return f.jobs(f.job(), "{not json")


@dataclass
class Case:
    id: str
    argv: Callable[[Inputs], list[str]]
    phrases: tuple[str, ...]


def case(id: str, argv: Callable[[Inputs], list[str]], *phrases: str, xfail: str | None = None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(id, argv, phrases), id=id, marks=marks)


# ------------------------------------------------------------------------------------------------------------ table
TABLE = [
    # ---- generate: the reference
    case("generate-reference-missing", lambda f: f.generate(f.tmp / "nope.jpg"), "nope.jpg", "no such file"),
    case("generate-reference-empty", lambda f: f.generate(f.file("empty.mp4")), "empty.mp4", "empty"),
    case("generate-reference-truncated-video", lambda f: f.generate(f.truncated(f.video, "cut.mp4")), "cut.mp4",
         "corrupt video data"),
    case("generate-reference-truncated-photo", lambda f: f.generate(f.truncated(PHOTO, "cut.png")), "cut.png",
         "corrupt image"),
    case("generate-reference-text-file", lambda f: f.generate(f.file("notes.txt", "hello\n" * 50)), "notes.txt",
         "not a readable media file"),
    case("generate-reference-audio-only", lambda f: f.generate(f.speech), "speech.wav", "no video track"),
    case("generate-reference-a-folder", lambda f: f.generate(f.folder("refdir")), "refdir", "is a directory"),
    case("generate-reference-no-face", lambda f: f.generate(f.grey_png()), "wall.png", "no face"),
    # ---- generate: the speech
    case("generate-audio-missing", lambda f: f.generate(audio=f.tmp / "nope.wav"), "nope.wav", "no such file"),
    case("generate-audio-empty", lambda f: f.generate(audio=f.file("empty.wav")), "empty.wav", "empty"),
    case("generate-audio-truncated", lambda f: f.generate(audio=f.file("cut.wav", f.speech.read_bytes()[:30])),
         "cut.wav", "not a readable media file"),
    case("generate-audio-is-a-photo", lambda f: f.generate(audio=PHOTO), "demo_photo.png", "audio", "no audio track"),
    case("generate-audio-silent", lambda f: f.generate(audio=f.wav("silence.wav", np.zeros(2 * RATE))),
         "silence.wav", "silent"),
    case("generate-audio-too-short", lambda f: f.generate(audio=f.wav("short.wav",
         0.3 * np.sin(np.arange(3200) / 5.0))),
         "short.wav", "too short"),
    case("generate-audio-nan", lambda f: f.generate(audio=f.wav("nan.wav", nan_wave(), "FLOAT")), "nan.wav", "NaN"),
    # ---- generate: the output
    case("generate-out-a-folder", lambda f: f.generate(PHOTO, None, f.folder("outdir")), "outdir", "directory"),
    case("generate-out-wrong-suffix", lambda f: f.generate(PHOTO, None, f.tmp / "out.txt"), "out.txt",
         "must end in .mp4"),
    case("generate-out-same-as-reference",
         lambda f: f.generate(shutil.copy(f.video, f.tmp / "ref.mp4"), None, f.tmp / "ref.mp4"), "ref.mp4",
         "would overwrite the reference"),
    case("generate-out-same-as-audio",
         lambda f: f.generate(PHOTO, shutil.copy(f.video, f.tmp / "talk.mp4"), f.tmp / "talk.mp4"), "talk.mp4",
         "would overwrite the audio"),
    # ---- generate: driving files
    case("generate-pose-from-bad-shape",
         lambda f: f.generate(PHOTO, None, None, "--pose-from", str(f.npy("p.npy", np.zeros((40, 5), np.float32)))),
         "p.npy", "(T, 6)"),
    case("generate-pose-from-nan",
         lambda f: f.generate(PHOTO, None, None, "--pose-from", str(f.npy("p.npy", np.full((40, 6), np.nan,
         np.float32)))),
         "p.npy", "NaN"),
    case("generate-pose-from-missing", lambda f: f.generate(PHOTO, None, None, "--pose-from", str(f.tmp / "p.npy")),
         "p.npy", "no such file"),
    case("generate-pose-from-not-npy", lambda f: f.generate(PHOTO, None, None, "--pose-from", str(f.file("p.npy",
         "x"))),
         "p.npy", "not a readable .npy"),
    case("generate-motion-style-an-image", lambda f: f.generate(PHOTO, None, None, "--motion-style", str(PHOTO)),
         "demo_photo.png", "must be a video with speech"),
    case("generate-expression-from-missing",
         lambda f: f.generate(PHOTO, None, None, "--expression-from", str(f.tmp / "expr.mp4")), "expr.mp4",
         "no such file"),
    # ---- generate: models
    case("generate-models-missing", lambda f: f.generate(models=str(f.tmp / "nomodels")), "nomodels",
         "models folder not found"),
    case("generate-models-empty-folder", lambda f: f.generate(models=str(f.folder("nomodels"))), "nomodels",
         "no motion checkpoint"),
    case("generate-models-corrupt-generator",
         lambda f: f.generate(models=str(f.bundle_copy(corrupt("generator.safetensors")))),
         "generator.safetensors", "not a readable safetensors"),
    case("generate-models-wrong-stage",
         lambda f: f.generate(models=f.bundle_copy(lambda b: shutil.copy(b / "expression.safetensors",
                                                                          b / "motion.safetensors"))),
         "motion.safetensors", "is a 'expression' checkpoint, expected 'motion'"),
    # ---- generate: --jobs
    case("generate-jobs-missing", lambda f: f.generate_jobs(f.tmp / "j.jsonl"),
         "j.jsonl", "not found"),
    case("generate-jobs-invalid-json", lambda f: f.generate_jobs(jsonl_damage(f)),
         "jobs.jsonl", "line 2", "not valid JSON"),
    case("generate-jobs-unknown-key",
         lambda f: f.generate_jobs(f.jobs(f.job(colour="red"))),
         "jobs.jsonl", "line 1", "colour"),
    case("generate-jobs-bad-value",
         lambda f: f.generate_jobs(f.jobs(f.job(**{"motion-scale": "lots"}))),
         "jobs.jsonl", "line 1", "motion-scale", "got 'lots'"),
    case("generate-jobs-out-of-range",
         lambda f: f.generate_jobs(f.jobs(f.job(**{"motion-scale": -1}))),
         "jobs.jsonl", "motion-scale", "from 0 to 5", "-1"),
    case("generate-jobs-no-out",
         lambda f: f.generate_jobs(f.jobs({"reference": str(PHOTO), "audio": str(f.speech)})), "job 1", "--out",
         "required"),
    case("generate-jobs-missing-reference",
         lambda f: f.generate_jobs(f.jobs(f.job(reference=str(f.tmp / "x.jpg")))),
         "x.jpg", "no such file"),
    case("generate-jobs-duplicate-outs",
         lambda f: f.generate_jobs(f.jobs(f.job(), f.job(still=True))),
         "jobs.jsonl", "same output"),
    case("generate-jobs-not-objects", lambda f: f.generate_jobs(f.jobs("[1, 2]")),
         "jobs.jsonl", "line 1", "JSON object"),
    case("generate-jobs-empty", lambda f: f.generate_jobs(f.file("jobs.jsonl")),
         "jobs.jsonl", "no job"),
    # ---- generate: values
    case("generate-motion-scale-nan", lambda f: f.generate(PHOTO, None, None, "--motion-scale", "nan"),
         "--motion-scale", "nan", "from 0 to 5"),
    case("generate-expression-scale-inf", lambda f: f.generate(PHOTO, None, None, "--expression-scale", "inf"),
         "--expression-scale", "inf"),
    case("generate-seed-negative", lambda f: f.generate(PHOTO, None, None, "--seed", "-5"), "--seed", "-5",
         "from 0 to"),
    case("generate-device-bogus", lambda f: f.generate(PHOTO, None, None, "--device", "bogus"), "--device", "bogus"),
    case("generate-size-300", lambda f: f.generate(PHOTO, None, None, "--size", "300"), "--size", "300",
         "is not one of"),
    case("generate-finetune-steps-huge", lambda f: f.generate(PHOTO, None, None, "--finetune-steps", "99999"),
         "--finetune-steps", "99999", "from 0 to 2000"),
    case("generate-unknown-option", lambda f: f.generate(PHOTO, None, None, "--colour", "red"), "--colour",
         "No such option"),
    case("generate-no-reference", lambda f: ["generate", "--audio", str(f.speech), "--out", str(f.out)], "--reference",
         "required"),

    # ---- preprocess
    case("preprocess-input-missing", lambda f: f.preprocess(f.tmp / "novideos"), "novideos", "does not exist"),
    case("preprocess-input-empty-folder", lambda f: f.preprocess(f.folder("videos")), "videos", "has no videos"),
    case("preprocess-input-not-a-video", lambda f: f.preprocess(f.file("clip.mp4", b"\x00garbage" * 100)), "clip.mp4",
         "not a readable media file"),
    case("preprocess-input-folder-of-text", lambda f: f.preprocess(f.folder("videos", "a.txt", "b.json")), "videos",
         "has no videos"),
    case("preprocess-out-is-a-file", lambda f: f.preprocess(out=f.file("store.txt", "x")), "store.txt", "not a folder"),
    case("preprocess-workers-0", lambda f: f.preprocess(extra=("--workers", "0")), "--workers", "0",
         "not in the range"),
    case("preprocess-shard-out-of-range", lambda f: f.preprocess(extra=("--shard", "3/2")), "--shard", "3/2",
         "need 0 <= I < N"),
    case("preprocess-shard-malformed", lambda f: f.preprocess(extra=("--shard", "half")), "--shard", "half",
         "expected I/N"),
    case("preprocess-crop-mode-bogus", lambda f: f.preprocess(extra=("--crop-mode", "wobbly")), "--crop-mode",
         "wobbly", "is not one of"),
    case("preprocess-speaker-map-missing", lambda f: f.preprocess(extra=("--speaker-map", str(f.tmp / "m.json"))),
         "m.json", "does not exist"),
    case("preprocess-speaker-map-invalid-json",
         lambda f: f.preprocess(extra=("--speaker-map", str(f.file("m.json", "{oops")))), "m.json",
         "unreadable speaker map"),
    case("preprocess-speaker-map-a-list",
         lambda f: f.preprocess(extra=("--speaker-map", str(f.file("m.json", "[1, 2]")))), "m.json", "JSON object"),

    # ---- train
    case("train-unknown-stage", lambda f: f.train(stage="dance"), "dance", "is not one of"),
    case("train-store-missing", lambda f: f.train(data=f.tmp / "nostore"), "nostore", "does not exist"),
    case("train-store-empty-folder", lambda f: f.train("--max-steps", "1", data=f.folder("nostore")), "nostore",
         "not a clip store"),
    case("train-store-not-a-store", lambda f: f.train("--max-steps", "1", data=f.folder("nostore", "a.txt")),
         "nostore", "not a clip store"),
    case("train-store-a-file", lambda f: f.train(data=f.file("store.txt", "x")), "store.txt", "is a file"),
    case("train-out-a-file", lambda f: f.train("--max-steps", "1", out=f.file("run.txt", "x")), "run.txt", "is a file"),
    case("train-config-missing", lambda f: f.train("--config", str(f.tmp / "c.yaml")), "c.yaml", "does not exist"),
    case("train-config-invalid-yaml", lambda f: f.train("--config", str(f.file("c.yaml", "trainer: [unclosed\n"))),
         "c.yaml", "not valid YAML"),
    case("train-config-not-a-mapping", lambda f: f.train("--config", str(f.file("c.yaml", "- 1\n- 2\n"))), "c.yaml",
         "mapping"),
    case("train-config-unknown-key", lambda f: f.train("--config", str(f.file("c.yaml", "trainer:\n  colour: red\n"))),
         "colour", "unknown config field"),
    case("train-set-unknown-key", lambda f: f.train("--set", "trainer.colour=red"), "colour", "unknown config field"),
    case("train-set-bad-value", lambda f: f.train("--set", "trainer.batch_size=lots"), "batch_size", "lots",
         "expected"),
    case("train-set-negative-batch", lambda f: f.train("--max-steps", "1", "--set", "trainer.batch_size=-4"),
         "batch_size", "-4"),
    case("train-set-lr-nan", lambda f: f.train("--max-steps", "1", "--set", "optim.lr=nan"), "lr", "nan"),
    case("train-set-val-fraction-2", lambda f: f.train("--max-steps", "1", "--set", "data.val_fraction=2"),
         "val_fraction", "2"),
    case("train-set-negative-checkpoint-every",
         lambda f: f.train("--max-steps", "1", "--set", "trainer.checkpoint_every=-3"), "checkpoint_every", "-3"),
    case("train-set-malformed", lambda f: f.train("--set", "batch_size"), "--set", "batch_size",
         "expected key.sub=value"),
    case("train-resume-missing-file", lambda f: f.train("--max-steps", "1", "--resume", str(f.tmp / "state.pt")),
         "state.pt", "not found"),
    case("train-resume-corrupt-file",
         lambda f: f.train("--max-steps", "1", "--resume", str(f.file("state.pt", b"\x00garbage" * 10))), "state.pt",
         "not a readable training state"),
    case("train-ablation-bogus", lambda f: f.train("--ablation", "no_brain", stage="generator"), "no_brain"),
    case("train-ablation-on-stage-without", lambda f: f.train("--ablation", "no_warp"), "ablation",
         "has no 'ablation' setting"),
    case("train-max-steps-negative", lambda f: f.train("--max-steps", "-1"), "--max-steps", "-1", "not in the range"),
    case("train-vgg-weights-missing", lambda f: f.train("--vgg-weights", str(f.tmp / "vgg.pth"), stage="generator"),
         "vgg.pth", "does not exist"),

    # ---- evaluate motion / expression (the learners)
    case("evaluate-motion-data-missing", lambda f: f.evaluate("motion", data=f.tmp / "nostore"), "nostore",
         "not found"),
    case("evaluate-motion-data-not-a-store", lambda f: f.evaluate("motion", data=f.folder("nostore", "a.txt")),
         "nostore", "not a clip store"),
    case("evaluate-motion-data-bad-manifest",
         lambda f: f.evaluate("motion", data=f.file("nostore/manifest.jsonl", "{oops\n").parent), "manifest.jsonl",
         "line 1 is not valid JSON"),
    case("evaluate-motion-data-a-file", lambda f: f.evaluate("motion", data=f.file("store.txt", "x")), "store.txt",
         "is a file"),
    case("evaluate-motion-models-missing", lambda f: f.evaluate("motion", models=f.tmp / "noruns"), "noruns:",
         "run folder or", "not found"),
    case("evaluate-motion-models-empty-folder", lambda f: f.evaluate("motion", models=f.folder("norun")), "norun",
         "no exported checkpoint"),
    case("evaluate-motion-models-wrong-stage",
         lambda f: f.evaluate("motion", models=f.bundle / "expression.safetensors"), "expression.safetensors",
         "expression"),
    case("evaluate-motion-models-not-from-training",
         lambda f: f.evaluate("motion", models=f.bundle / "motion.safetensors"), "motion.safetensors", "data.val_pred",
         "rhythmhead train motion"),
    case("evaluate-motion-models-corrupt",
         lambda f: f.evaluate("motion", models=f.file("motion.safetensors", b"\x00" * 64)), "motion.safetensors",
         "not a readable safetensors"),
    case("evaluate-motion-neither-models-nor-folds", lambda f: f.evaluate("motion", models=False), "--models",
         "--folds"),
    case("evaluate-motion-out-a-folder", lambda f: f.evaluate("motion", out=f.folder("reports")), "reports",
         "is a directory"),
    case("evaluate-motion-out-wrong-suffix", lambda f: f.evaluate("motion", out=f.tmp / "report.txt"), "report.txt",
         "name it report.json"),
    case("evaluate-motion-out-under-a-file",
         lambda f: f.evaluate("motion", out=f.file("afile", "x") / "report.json"), "afile", "is a file"),
    case("evaluate-motion-sigma-0", lambda f: f.evaluate("motion", "--sigma", "0"), "--sigma", "0", "not in the range"),
    case("evaluate-motion-device-bogus", lambda f: f.evaluate("motion", "--device", "bogus"), "--device bogus",
         "not a torch device"),
    case("evaluate-motion-work-with-models", lambda f: f.evaluate("motion", "--work", str(f.tmp / "w")), "--work",
         "--folds"),
    case("evaluate-motion-folds-1", lambda f: f.evaluate("motion", "--folds", "1", models=False), "--folds 1",
         "at least 2 folds"),
    case("evaluate-motion-folds-more-than-speakers", lambda f: f.evaluate("motion", "--folds", "5", models=False),
         "speakers", "5 speakers"),
    case("evaluate-motion-folds-bad-set", lambda f: f.evaluate("motion", "--folds", "2", "--set", "trainer.colour=1",
                                                               models=False), "colour", "unknown config field"),
    case("evaluate-expression-models-missing", lambda f: f.evaluate("expression", models=f.tmp / "noruns"), "noruns",
         "run folder or", "not found"),
    case("evaluate-expression-models-wrong-stage",
         lambda f: f.evaluate("expression", models=f.bundle / "motion.safetensors"), "motion.safetensors", "motion"),
    case("evaluate-expression-data-missing", lambda f: f.evaluate("expression", data=f.tmp / "nostore"), "nostore",
         "not found"),
    case("evaluate-expression-split-with-folds",
         lambda f: f.evaluate("expression", "--folds", "2", "--split", "all", models=False), "--split",
         "only applies with --models"),
    # ---- evaluate unprojection / render / generator / end2end
    case("evaluate-unprojection-models-missing", lambda f: f.evaluate("unprojection", models=f.tmp / "noruns"),
         "noruns", "run folder or", "not found"),
    case("evaluate-unprojection-models-wrong-stage",
         lambda f: f.evaluate("unprojection", models=f.bundle / "motion.safetensors"), "motion.safetensors",
         "expected 'unprojection'"),
    case("evaluate-unprojection-data-missing",
         lambda f: f.evaluate("unprojection", data=f.tmp / "nostore", models=f.bundle / "motion.safetensors"),
         "nostore", "not found"),
    case("evaluate-render-data-missing", lambda f: f.evaluate("render", data=f.tmp / "nostore", models=False),
         "nostore", "not found"),
    case("evaluate-render-data-empty-folder", lambda f: f.evaluate("render", data=f.folder("nostore"), models=False),
         "nostore", "not a clip store"),
    case("evaluate-render-stride-0", lambda f: f.evaluate("render", "--stride", "0", models=False), "--stride", "0",
         "not in the range"),
    case("evaluate-render-examples-a-file",
         lambda f: f.evaluate("render", "--examples", str(f.file("png", "x")), models=False), "--examples", "png",
         "is a file"),
    case("evaluate-render-out-a-folder", lambda f: f.evaluate("render", out=f.folder("reports"), models=False),
         "reports", "is a directory"),
    case("evaluate-generator-data-missing", lambda f: f.evaluate("generator", data=f.tmp / "nostore"), "nostore",
         "not found"),
    case("evaluate-generator-models-missing", lambda f: f.evaluate("generator", models=f.tmp / "noruns"), "noruns",
         "run folder or", "not found"),
    case("evaluate-generator-models-wrong-stage",
         lambda f: f.evaluate("generator", models=f.bundle / "motion.safetensors"), "motion.safetensors",
         "expected 'generator'"),
    case("evaluate-generator-unknown-clip", lambda f: f.evaluate("generator", "--clip", "nobody"), "nobody",
         "no clip(s)"),
    case("evaluate-generator-second-models-missing",
         lambda f: [*f.evaluate("generator"), "--models", str(f.tmp / "gen_no_warp")], "gen_no_warp", "run folder or",
         "not found"),
    case("evaluate-generator-out-wrong-suffix", lambda f: f.evaluate("generator", out=f.tmp / "report.csv"),
         "report.csv", ".json"),
    case("evaluate-generator-device-bogus", lambda f: f.evaluate("generator", "--device", "bogus"), "--device",
         "bogus", "is not one of"),
    case("evaluate-end2end-clips-missing",
         lambda f: ["evaluate", "end2end", "--clips", str(f.tmp / "noclips"), "--models", str(f.bundle),
                    "--out", str(f.report)], "noclips", "not found"),
    case("evaluate-end2end-clips-empty-folder",
         lambda f: ["evaluate", "end2end", "--clips", str(f.folder("noclips")), "--models", str(f.bundle),
                    "--out", str(f.report)], "noclips", "no video clips"),
    case("evaluate-end2end-models-missing",
         lambda f: ["evaluate", "end2end", "--clips", str(f.video.parent), "--models", str(f.tmp / "nomodels"),
                    "--out", str(f.report)], "nomodels", "not found"),
    case("evaluate-end2end-max-frames-4",
         lambda f: ["evaluate", "end2end", "--clips", str(f.video.parent), "--models", str(f.bundle),
                    "--out", str(f.report), "--max-frames", "4"], "--max-frames", "4", "not in the range"),
    case("evaluate-end2end-device-bogus",
         lambda f: ["evaluate", "end2end", "--clips", str(f.video.parent), "--models", str(f.bundle),
                    "--out", str(f.report), "--device", "bogus"], "--device", "bogus", "not a torch device"),
    case("evaluate-end2end-out-wrong-suffix",
         lambda f: ["evaluate", "end2end", "--clips", str(f.video.parent), "--models", str(f.bundle),
                    "--out", str(f.tmp / "e2e.txt")], "e2e.txt", ".json"),
    case("evaluate-end2end-out-a-folder",
         lambda f: ["evaluate", "end2end", "--clips", str(f.video.parent), "--models", str(f.bundle),
                    "--out", str(f.folder("reports"))], "reports", "is a directory"),
    case("evaluate-unknown-subcommand", lambda f: ["evaluate", "vibes", "--data", str(f.store)], "vibes",
         "No such command"),
]


# ------------------------------------------------------------------------------------------------------------- test
def snapshot(*roots: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``roots`` → (is a folder, size, mtime): any file written, replaced or left behind changes it."""
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            state[str(path)] = (path.is_dir(), 0 if path.is_dir() else st.st_size, st.st_mtime_ns)
    return state


def test_table_size():
    commands = {c.values[0].id.split("-")[0] for c in TABLE}
    assert len(TABLE) >= 40 and commands == {"generate", "preprocess", "train", "evaluate"}
    assert len({c.id for c in TABLE}) == len(TABLE)


@pytest.mark.parametrize("row", TABLE)
def test_bad_input(row: Case, shared, tmp_path, monkeypatch, cli):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # anything written relative to the working directory would show in the snapshot
    monkeypatch.setattr(click.core, "_detect_program_name", lambda *a, **k: "rhythmhead")  # not 'python -m pytest'
    f = Inputs(work, shared)
    argv = row.argv(f)
    before = snapshot(work, shared["root"])
    code, out, err = cli(argv)
    print(f"$ rhythmhead {' '.join(argv)}\n{err}")  # shown by pytest -rA / on failure: the table's error column
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert "Traceback" not in err, err
    assert code == 2, f"exit status {code}\n{err}{out}"
    assert len(errors) == 1 and len(lines) == 1, err
    for phrase in row.phrases:
        assert phrase in errors[0], f"{phrase!r} not in {errors[0]!r}"
    after = snapshot(work, shared["root"])
    added = sorted(set(after) - set(before))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p] and not before[p][0])
    removed = sorted(set(before) - set(after))
    assert not added and not changed and not removed, f"left behind {added}, changed {changed}, removed {removed}"
