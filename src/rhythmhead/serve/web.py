"""The web page of ``rhythmhead serve``: a Gradio page mounted at ``/`` on the same FastAPI app as the HTTP API.

What a user does on it: choose a reference photo or clip (or the built-in example: the packaged photo speaking the
packaged speech), upload or record speech, set the controls, press *Generate*; a progress bar follows the job, then
the page shows the video, a download button, the head-pose curves and the mouth-opening-versus-speech plot (the
plots of ``--save-intermediates``, :mod:`rhythmhead.inference.intermediates`).

The page is a client of the server's :class:`~rhythmhead.serve.jobs.JobManager`, as the HTTP API is: it saves the
uploads into ``manager.new_upload_dir()`` (as ``<field><suffix>``), calls ``submit`` and polls ``get``, so a job
from the page is checked, queued, limited, cancelled and expired like any other.

The controls are built from :func:`~rhythmhead.inference.options.schema` — :class:`GenerationControls
<rhythmhead.inference.options.GenerationControls>`' fields and metadata, with the server's speech limit — one widget
per field: a slider for a bounded number, a number box for the seed (too wide for a slider) or an unbounded number, a
checkbox for a flag, a dropdown for choices; the values are checked by ``submit`` as the command line's are. So the
page cannot disagree with ``rhythmhead generate`` or the API. A bad upload or value shows the
:class:`~rhythmhead.errors.InputError` line in the page (an error toast naming the field), without the server's paths.
"""
from __future__ import annotations

import asyncio
import os
import shutil
from importlib import resources
from pathlib import Path

from ..common import FPS
from ..errors import InputError
from ..inference.options import schema as controls_schema
from .jobs import FILE_FIELDS, FINISHED, QueueFull, ServerClosed

ASSETS = Path(str(resources.files("rhythmhead") / "assets"))
DEMO_PHOTO = ASSETS / "demo_photo.png"
DEMO_SPEECH = ASSETS / "demo_speech.wav"

POLL_S = 0.3  # how often a job's state is read while the page waits
SLIDER_MAX_STEPS = 10_000  # a whole-number range wider than this (the seed's) gets a number box, not a slider
NICE_STEPS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10)  # a float slider's step: the largest of these ≤ its span / 100
PLOTS = ("pose_curves.png", "mouth_vs_speech.png")  # written into the job's folder, so they expire with it

# The optional driving files of JobManager.submit: field name -> (label, help).
DRIVING_FILES = {
    "pose_from": ("Head motion from", "a video whose head motion is replayed about the reference's pose, or a "
                                      "(T, 6) .npy of poses"),
    "expression_from": ("Expression from", "a video whose facial expression drives the face instead of the speech"),
    "motion_style": ("Motion style from", "a talking clip (video with speech) whose head-motion style the "
                                          "reference takes on"),
}

CSS = """
.gradio-container { max-width: 1320px !important; margin: 0 auto !important; }
#title h1 { margin-bottom: 0; }
#title p { margin-top: 0.2em; opacity: 0.75; }
#status { min-height: 2.4em; }
"""


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _float_step(lo: float, hi: float) -> float:
    return max([s for s in NICE_STEPS if s <= (hi - lo) / 100] or NICE_STEPS[:1])


def control_widget(name: str, spec: dict):
    """The Gradio input of one control from its :func:`~rhythmhead.inference.options.schema` entry (see the module
    docstring); its ``elem_id`` is ``control-<name>``."""
    import gradio as gr

    common = dict(label=_label(name), info=spec["help"], value=spec["default"], elem_id=f"control-{name}")
    if spec["type"] == "bool":
        return gr.Checkbox(**common)
    if spec["choices"] is not None:
        return gr.Dropdown(choices=list(spec["choices"]), **common)
    lo, hi, whole = spec["min"], spec["max"], spec["type"] == "int"
    if hi is None or (whole and hi - lo > SLIDER_MAX_STEPS):
        span = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
        return gr.Number(minimum=lo, maximum=hi, precision=0 if whole else None,
                         **{**common, "info": f"{spec['help']} ({span})"})
    return gr.Slider(minimum=lo, maximum=hi, step=1 if whole else _float_step(lo, hi), **common)


def _save_upload(folder: Path, field: str, path: str) -> Path:
    """Copy one file Gradio received into the job's upload folder as ``<field><suffix>`` (as the API saves it)."""
    dest = folder / f"{field}{Path(path).suffix.lower()}"
    shutil.copyfile(path, dest)
    return dest


def preview(path: str | None):
    """The first frame of the chosen reference (a photo is its own first frame); an unreadable file is a warning in
    the page at once (``submit`` reports it again, as an error)."""
    import gradio as gr

    from ..media.io import iter_frames

    if not path:
        return None
    try:
        return next(iter(iter_frames(path)), None)
    except InputError as exc:
        gr.Warning(str(exc).replace(f"{Path(path).parent}/", ""))
    except Exception:  # noqa: BLE001 - a preview never breaks the page; submit reports the real problem
        pass
    return None


def make_plots(manager, job_id: str, audio: Path) -> tuple[str | None, str | None]:
    """The job's head-pose curves and mouth-opening-versus-speech plot, as PNG paths in its folder (Nones when its
    plan is gone). Poses and the posed 2-D landmarks come from ``manager.poses``, the speech envelope from the
    job's own speech upload."""
    import numpy as np

    from ..audio.windows import envelope
    from ..inference.intermediates import plot_mouth_vs_speech, plot_pose_curves
    from ..media.io import load_audio

    plan = manager.poses(job_id)
    if plan is None or not audio.is_file():
        return None, None
    poses, landmarks = np.asarray(plan["poses"], np.float32), np.asarray(plan["landmarks"], np.float32)
    rate = 16000
    env = envelope(load_audio(audio, rate), rate, len(poses), FPS)
    pose_png, mouth_png = (audio.parent / name for name in PLOTS)
    plot_pose_curves(pose_png, poses, FPS)
    plot_mouth_vs_speech(mouth_png, landmarks, env, FPS)
    return str(pose_png), str(mouth_png)


def _download_copy(video: Path, job_id: str) -> Path:
    """The video under a name worth keeping (``rhythmhead-<id>.mp4``, a hard link where the disk allows)."""
    named = video.with_name(f"rhythmhead-{job_id[:8]}.mp4")
    if not named.exists():
        try:
            os.link(video, named)
        except OSError:
            shutil.copyfile(video, named)
    return named


def _summary(job: dict) -> str:
    frames = (job.get("progress") or {}).get("total")
    seconds = (job.get("finished") or 0) - (job.get("started") or 0)
    text = f"**Done**: {frames} frames ({frames / FPS:.1f} s of video)" if frames else "**Done**"
    if seconds > 0:
        text += f", made in {seconds:.1f} s"
    notes = job.get("notes") or []
    return text + "." + "".join(f"\n\n*Note: {n}*" for n in notes)


class _Failed(Exception):
    """A generation that could not be made: the one line to show (the user's own file names in it)."""

    def __init__(self, text: str, own_names: dict[str, str] | None = None):
        for saved, own in (own_names or {}).items():
            text = text.replace(saved, own)
        super().__init__(text)


def build_page(manager):
    """The page's :class:`gradio.Blocks` (not yet mounted), submitting to ``manager``."""
    import gradio as gr

    schema = controls_schema(manager.max_seconds)

    async def follow(reference, audio, *rest, progress):
        """Save the uploads, submit a job, follow it; returns (status, video, download button, pose plot, mouth
        plot). A problem is a :class:`_Failed` with the text to show."""
        driving = dict(zip(DRIVING_FILES, rest[:len(DRIVING_FILES)]))
        values = dict(zip(schema, rest[len(DRIVING_FILES):]))
        if not reference:
            raise _Failed("Choose a reference photo or clip, or click the example below the speech.")
        if not audio:
            raise _Failed("Upload or record the speech.")
        folder = manager.new_upload_dir()
        uploads = {"reference": reference, "audio": audio, **{k: v for k, v in driving.items() if v}}
        files = {field: _save_upload(folder, field, path) for field, path in uploads.items()}
        # the manager's messages name the saved files (reference.png, …): name them as the user did
        own_names = {files[k].name: Path(v).name for k, v in uploads.items()}
        try:
            job_id = await asyncio.to_thread(manager.submit, files, values)
        except (InputError, QueueFull, ServerClosed) as exc:  # a FieldError's text names the file or the control
            raise _Failed(str(exc), own_names) from None
        progress(0, desc="queued")
        try:
            while (job := manager.get(job_id))["state"] not in FINISHED:
                done, total = job["progress"]["done"], job["progress"]["total"]
                if job["state"] == "queued":
                    progress(0, desc=f"queued (place {job.get('queue_position') or 1})")
                elif not total:
                    progress(0, desc="preparing the reference")
                else:
                    progress((done, total), desc="making frames", unit="frames")
                await asyncio.sleep(POLL_S)
        except asyncio.CancelledError:  # the Cancel button (Gradio cancels this task): stop the job too
            manager.cancel(job_id)
            raise
        if job["state"] != "done":
            raise _Failed((job.get("error") or {}).get("message") or f"the job was {job['state']}", own_names)
        video = manager.video_path(job_id)
        pose_png, mouth_png = await asyncio.to_thread(make_plots, manager, job_id, files["audio"])
        named = _download_copy(video, job_id)
        return (_summary(job), str(video), gr.DownloadButton(value=str(named), visible=True),
                gr.Image(value=pose_png, visible=pose_png is not None),
                gr.Image(value=mouth_png, visible=mouth_png is not None))

    async def generate(*inputs, progress=gr.Progress()):
        """:func:`follow`, its problem shown twice: in the status box (it stays) and as an error toast."""
        try:
            yield await follow(*inputs, progress=progress)
        except _Failed as failed:
            yield (f"**Not made**: {failed}", gr.skip(), gr.skip(), gr.skip(), gr.skip())
            raise gr.Error(str(failed), duration=None) from None

    def clear():
        """What a new run starts from: no video, no download, no plots."""
        return ("", None, gr.DownloadButton(visible=False), gr.Image(value=None, visible=False),
                gr.Image(value=None, visible=False))

    with gr.Blocks(title="rhythmhead", analytics_enabled=False) as page:
        gr.Markdown("# rhythmhead\nA talking head with rhythmic head motion: a photo or clip of a person and a "
                    "speech recording give a video of that person saying it.", elem_id="title")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                with gr.Row(equal_height=True):
                    reference = gr.File(label="Reference photo or clip", file_types=sorted(FILE_FIELDS["reference"]),
                                        elem_id="reference", height=160, scale=3)
                    shown = gr.Image(label="Reference frame", interactive=False, height=160, scale=2, buttons=[],
                                     elem_id="reference-preview")
                audio = gr.Audio(label="Speech (upload or record)", sources=["upload", "microphone"],
                                 type="filepath", elem_id="speech")
                gr.Examples([[str(DEMO_PHOTO), str(DEMO_SPEECH)]], inputs=[reference, audio],
                            label="Built-in example: the packaged photo and speech", elem_id="example")
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel", scale=1)
                with gr.Accordion("Controls", open=True):
                    widgets = {}  # control name -> widget: the flags in one row, the others two a row
                    flags = [n for n, s in schema.items() if s["type"] == "bool"]
                    others = [n for n, s in schema.items() if s["type"] != "bool"]
                    for row in [flags] + [others[i:i + 2] for i in range(0, len(others), 2)]:
                        with gr.Row():
                            widgets.update({n: control_widget(n, schema[n]) for n in row})
                with gr.Accordion("Driving files (optional)", open=False):
                    driving = [gr.File(label=label, file_types=sorted(FILE_FIELDS[name]), elem_id=f"file-{name}",
                                       height=90) for name, (label, _) in DRIVING_FILES.items()]
                    gr.Markdown("\n".join(f"- **{label}**: {text}." for label, text in DRIVING_FILES.values()))
            with gr.Column(scale=4):
                status = gr.Markdown("Choose a reference and speech, then press **Generate**.", elem_id="status")
                video = gr.Video(label="Result", interactive=False, height=440, elem_id="result")
                download = gr.DownloadButton("Download video", visible=False, variant="primary", elem_id="download")
        # the plots of the result, full width (shown with a result)
        pose_plot = gr.Image(label="Head pose over time", show_label=False, interactive=False, buttons=[],
                             visible=False, elem_id="pose-curves")  # the plots carry their own titles
        mouth_plot = gr.Image(label="Mouth opening vs speech", show_label=False, interactive=False, buttons=[],
                              visible=False, elem_id="mouth-vs-speech")

        reference.change(preview, inputs=reference, outputs=shown)
        results = [status, video, download, pose_plot, mouth_plot]
        event = run.click(clear, outputs=results, queue=False, show_progress="hidden").then(
            generate, inputs=[reference, audio, *driving, *(widgets[n] for n in schema)], outputs=results,
            show_progress_on=[video], concurrency_limit=None)  # the progress bar (and an error mark) on the video
        stop.click(None, cancels=[event])
    return page


def mount(app, manager, *, token: str | None = None):
    """Mount the page at ``/`` of ``app`` (the FastAPI app of :func:`rhythmhead.serve.api.create_app`) and return
    ``app``. Call it after every API route is added: the mount at ``/`` answers what the app's own routes do not.

    ``token``: when set, the page asks for it (any user name) before it opens.
    """
    import gradio as gr

    page = build_page(manager)
    theme = gr.themes.Soft(primary_hue="indigo", neutral_hue="slate")  # local fonts only: nothing fetched
    auth = (lambda _user, password: password == token) if token else None
    # allowed: the built-in example's files, and the work folder (the jobs' videos and plots)
    return gr.mount_gradio_app(app, page, path="/", allowed_paths=[str(ASSETS), str(manager.work_dir)],
                               footer_links=[], run_history=False, ssr_mode=False, auth=auth, theme=theme, css=CSS)
