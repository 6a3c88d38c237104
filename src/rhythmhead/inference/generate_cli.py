"""``rhythmhead generate``: a reference clip or photo + speech → an mp4 of that person speaking, with rhythmic head motion.

The command parses, validates every input before any model is loaded (fail fast: one line and exit status 2 for a
missing file, a photo without a face, a too-short / silent / too-long speech, a corrupt or wrong-stage checkpoint),
then calls :class:`rhythmhead.inference.pipeline.TalkingHeadPipeline`. Output files are written atomically: a failure
leaves nothing under ``--out`` (nor in ``--save-intermediates``).

``--jobs JOBS.jsonl`` loads the models once and runs one generation per line; each line is a JSON object whose keys are
this command's option names (``"reference"``, ``"audio"``, ``"out"``, ``"motion_scale"`` or ``"motion-scale"``, ...);
options given on the command line are the defaults of every job. Every job's files and speech are checked before the
models load; a job that still fails (e.g. no face in its photo) is reported and the others run; the exit status is 2
if any job failed.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import click

from ..errors import InputError
from .options import NAMES, GenerationControls, click_options

OUT_SUFFIXES = (".mp4", ".mov", ".mkv")
FILE_KEYS = ("reference", "audio", "out", "pose_from", "motion_style", "expression_from", "save_intermediates")
JOB_KEYS = FILE_KEYS + NAMES
GLOBAL_KEYS = ("models", "device", "preset", "jobs")


@dataclass
class Job:
    """One generation: its files (paths as given), its checked controls, and what validation loaded."""

    options: dict
    controls: GenerationControls = field(default_factory=GenerationControls)
    line: int | None = None
    audio: object = None
    reference: object = None
    pose_track: object = None
    expression_ref: object = None
    style: object = None
    notes: list = field(default_factory=list)
    face_seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"job {self.line}" if self.line is not None else "generate"


def _where(job: Job, key: str) -> str:
    return f"{job.name}: --{key.replace('_', '-')}" if job.line is not None else f"--{key.replace('_', '-')}"


@contextmanager
def _named(job: Job):
    """A batch's up-front checks name the job that failed them (and stop the batch before any model loads)."""
    try:
        yield
    except InputError as exc:
        if job.line is None:
            raise
        raise InputError(f"{job.name}: {exc}") from None


def check_files(job: Job) -> None:
    """Cheap checks (headers only): required options, output path, input files readable and of the right kind."""
    from .inputs import check_input_files

    o = job.options
    for key in ("reference", "audio", "out"):
        if not o.get(key):
            hint = " (or --jobs FILE)" if job.line is None else ""
            raise click.UsageError(f"{_where(job, key)} is required{hint}")
    out = Path(o["out"])
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise InputError(f"output must end in {', '.join(OUT_SUFFIXES)}", out)
    if out.exists() and out.is_dir():
        raise InputError("output is a directory", out)
    inter = o.get("save_intermediates")
    if inter and Path(inter).exists() and not Path(inter).is_dir():
        raise InputError("--save-intermediates must be a folder, this is a file", inter)
    for key in ("reference", "audio", "pose_from", "expression_from", "motion_style"):
        if o.get(key) and Path(o[key]).resolve() == out.resolve():
            raise InputError(f"the output would overwrite the {key.replace('_', ' ')} input", out)
    if o.get("pose_from") and job.controls.still:
        raise click.UsageError(f"{_where(job, 'pose_from')} and --still exclude each other")
    job.pose_track = check_input_files(o)


def check_audio(job: Job) -> None:
    from .inputs import load_driving_audio

    job.audio = load_driving_audio(job.options["audio"], max_seconds=job.controls.max_seconds)


def check_faces(job: Job, echo, cache: dict | None = None) -> None:
    """Track the faces of the reference (and of any driving/style video): no face → InputError, several → a warning.

    ``cache`` (path → tracked result) lets a batch of jobs share the tracking of a file they have in common."""
    from .inputs import load_pose_track, load_reference
    from .reference import load_style_clip

    cache = {} if cache is None else cache

    def once(kind, path, fn):
        key = (kind, str(Path(path).resolve()))
        if key not in cache:
            cache[key] = fn(path)
        return cache[key]

    o = job.options
    start = time.perf_counter()
    job.reference, notes = once("reference", o["reference"], load_reference)
    notes = list(notes)
    if o.get("pose_from") and job.pose_track is None:
        job.pose_track = once("pose", o["pose_from"], load_pose_track)
    if o.get("expression_from"):
        job.expression_ref, more = once("reference", o["expression_from"], load_reference)
        notes += more
    if o.get("motion_style"):
        job.style = once("style", o["motion_style"], load_style_clip)
    for note in notes:
        echo(f"warning: {note}")
    job.notes += notes
    job.face_seconds = time.perf_counter() - start


def run_job(pipe, job: Job, echo, progress: bool = True) -> dict:
    """Generate one job with a loaded pipeline; returns its summary."""
    from tqdm import tqdm

    o = job.options
    start = time.perf_counter()
    result = pipe(job.reference, job.audio, pose_from=job.pose_track, motion_style=job.style,
                  expression_from=job.expression_ref, save_intermediates=o.get("save_intermediates"),
                  controls=job.controls)
    for note in result.notes:
        if note not in job.notes:
            echo(f"warning: {note}")
    bar = tqdm(total=result.n_frames, unit="frame", desc=Path(o["out"]).name, disable=not progress, leave=False)

    def on_progress(done, total):
        bar.update(done - bar.n)

    try:
        result.save(o["out"], progress=on_progress)
    finally:
        bar.close()
    seconds = time.perf_counter() - start + job.face_seconds
    stages = {"face_track": {"seconds": round(job.face_seconds, 4), "items": len(job.reference.frames), "fps": None},
              **result.timer.summary()}
    return {"out": str(o["out"]), "frames": result.n_frames, "seconds": seconds,
            "fps": result.n_frames / seconds if seconds > 0 else None, "stages": stages,
            **{k: v for k, v in result.describe().items() if k in ("motion", "expression", "shots", "photo")}}


def format_summary(summary: dict) -> str:
    """A few lines: output, frames, speed, per-stage times."""
    lines = [f"wrote {summary['out']}: {summary['frames']} frames ({summary['frames'] / 25:.2f} s) in "
             f"{summary['seconds']:.1f} s = {summary['fps']:.1f} frames/s; motion: {summary.get('motion')}, "
             f"expression: {summary.get('expression')}"]
    stages = summary["stages"]
    if stages:
        width = max(len(k) for k in stages)
        for name, s in stages.items():
            rate = f"{s['fps']:.1f} frames/s" if s.get("fps") else ""
            lines.append(f"  {name:<{width}}  {s['seconds']:8.2f} s  {rate}")
    return "\n".join(lines)


def read_jobs(path: str | Path, defaults: GenerationControls) -> list[Job]:
    """Parse a JSONL jobs file: one JSON object per non-empty line, keys = option names (``-`` or ``_``); a job's
    controls are ``defaults`` (the command line's) with its own values, checked as the command line's are."""
    p = Path(path)
    if not p.is_file():
        raise InputError("jobs file not found", p)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the jobs file ({getattr(exc, 'strerror', None) or exc})", p) from None
    jobs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {number} is not valid JSON ({exc.msg})", p) from None
        if not isinstance(item, dict):
            raise InputError(f"line {number} must be a JSON object of option: value", p)
        item = {k.replace("-", "_"): v for k, v in item.items()}
        unknown = sorted(set(item) - set(JOB_KEYS))
        if unknown:
            bad = ", ".join(unknown)
            hint = " (models/device/preset are set once on the command line)" if set(unknown) & set(GLOBAL_KEYS) else ""
            raise InputError(f"line {number} has unknown option(s) {bad}{hint}", p)
        for key in FILE_KEYS:
            if item.get(key) is not None and not isinstance(item[key], str):
                raise InputError(f"line {number}: --{key.replace('_', '-')} must be a file path (a string), "
                                 f"got {json.dumps(item[key])}", p)
        try:
            controls = GenerationControls.from_values({k: v for k, v in item.items() if k in NAMES}, defaults)
        except InputError as exc:
            raise InputError(f"line {number}: {exc}", p) from None
        jobs.append(Job({k: item.get(k) for k in FILE_KEYS}, controls, line=number))
    if not jobs:
        raise InputError("jobs file holds no job", p)
    outs = [str(Path(j.options.get("out") or "").resolve()) for j in jobs]
    dupes = sorted({o for o in outs if outs.count(o) > 1})
    if dupes:
        raise InputError(f"several jobs write the same output {dupes[0]}", p)
    return jobs


@click.command("generate", context_settings={"max_content_width": 110})
@click.option("--reference", type=click.Path(dir_okay=False), metavar="FILE",
              help="Reference video (a few seconds of the person speaking) or photo.")
@click.option("--audio", type=click.Path(dir_okay=False), metavar="FILE", help="Speech to say (wav/mp3/m4a/video).")
@click.option("--out", type=click.Path(dir_okay=False), metavar="OUT.mp4", help="Output video.")
@click.option("--models", type=click.Path(file_okay=False), metavar="DIR",
              help="Models folder (tools/make_bundle.py); default: the bundled models.")
@click.option("--pose-from", metavar="VIDEO|NPY",
              help="Head motion of a driving video (applied about the reference's pose) or exact (T, 6) poses (.npy).")
@click.option("--motion-style", metavar="CLIP", help="A video with speech whose head-motion style drives the head.")
@click.option("--expression-from", metavar="VIDEO", help="Take the facial expression from a video.")
@click.option("--preset", type=click.Choice(["fast", "paper"]), default="fast", show_default=True,
              help="Run settings (K reference frames, chunk, batch) and the bundle's preset sub-folder if any.")
@click.option("--save-intermediates", metavar="DIR", help="Also write poses/landmarks/codes .npy, renders and plots.")
@click_options
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu, cuda, cuda:1.")
@click.option("--jobs", type=click.Path(dir_okay=False), metavar="JOBS.jsonl",
              help="Run one job per JSON line, loading the models once.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def generate(reference, audio, out, models, pose_from, motion_style, expression_from, save_intermediates, preset,
             device, jobs, quiet, **controls):
    """Make a video of the reference person saying the speech, with lip motion and rhythmic head motion.

    An existing output file is replaced (as ffmpeg -y does); it is written under a hidden temporary name and renamed
    only once complete, so a failed or interrupted run leaves the old file as it was.

    \b
    Examples:
      rhythmhead generate --reference me.mp4 --audio speech.wav --out talk.mp4
      rhythmhead generate --reference photo.jpg --audio speech.wav --out talk.mp4 --motion-style other.mp4
      rhythmhead generate --reference me.mp4 --audio speech.wav --out talk.mp4 --pose-from poses.npy \\
          --expression-scale 1.3 --no-blink --save-intermediates debug/
      rhythmhead generate --models runs/bundle --jobs jobs.jsonl     # {"reference": ..., "audio": ..., "out": ...}
    """
    from .bundle import check_bundle, resolve_models_dir
    from .options import check_device

    echo = lambda msg: click.echo(msg, err=True)  # noqa: E731
    files = {"reference": reference, "audio": audio, "out": out, "pose_from": pose_from, "motion_style": motion_style,
             "expression_from": expression_from, "save_intermediates": save_intermediates}
    given = GenerationControls.from_values(controls)
    device = check_device(device)
    if jobs:
        job_list = read_jobs(jobs, given)
        for job in job_list:  # the command line's files are every job's defaults too
            job.options = {**{k: v for k, v in files.items() if k not in ("reference", "audio", "out")},
                           **{k: v for k, v in job.options.items() if v is not None}}
    else:
        job_list = [Job(files, given)]

    # 1. cheap checks of every job, then the checkpoints' headers, then the speech: all before loading any model
    for job in job_list:
        with _named(job):
            check_files(job)
    root = resolve_models_dir(models, preset)
    metas = check_bundle(root)
    if any(j.controls.unprojector == "network" for j in job_list) and "unprojection" not in metas:
        raise InputError("--unprojector network needs unprojection.safetensors in the models folder", root)
    for job in job_list:
        with _named(job):
            check_audio(job)
    # 2. faces of a single job before the models load (a batch tracks each job's faces when it runs)
    if len(job_list) == 1 and not jobs:
        check_faces(job_list[0], echo)

    from .pipeline import TalkingHeadPipeline

    start = time.perf_counter()
    pipe = TalkingHeadPipeline.load(root, device=device, preset=preset)
    echo(f"loaded models from {root} in {time.perf_counter() - start:.1f} s "
         f"({preset} preset, K = {pipe.settings.shots})")
    failed = 0
    tracked: dict = {}  # files several jobs share are tracked once
    for job in job_list:
        try:
            if job.reference is None:
                check_faces(job, echo, tracked)
            summary = run_job(pipe, job, echo, progress=not quiet)
        except Exception as exc:  # noqa: BLE001 — in a batch, one job's failure is reported and the others run
            if not jobs:
                raise
            failed += 1
            what = str(exc) if isinstance(exc, InputError) else f"failed ({type(exc).__name__}: {exc})"
            echo(f"error: {job.name}: {what.splitlines()[0] if what else type(exc).__name__}")
            continue
        click.echo(format_summary(summary))
    if failed:
        echo(f"{failed} of {len(job_list)} jobs failed")
        raise click.exceptions.Exit(2)
