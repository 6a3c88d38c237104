"""Device-run driver (not part of the package; see tools/gpu/README.md): decode frames with OpenCV into the dataset's
frame cache, bench G on CUDA, train the fast generator for a wall-time budget, save samples.

Usage (from the working tree root): python3 tools/gpu/train_generator_gpu.py TRAIN_SECONDS DEVICE
Environment: BS (batch, 8), NW (loader workers, 12), INIT (an export to start from; empty = random), REC (weight of the
reconstruction loss; empty = the preset's), BENCH=0 to skip the benchmark, EVAL=0 to skip the evaluation.
HERE (the compact stores) is $GEN_STORE or .gpu/gen_store."""
import hashlib, json, os, shutil, sys, time
from multiprocessing import Pool
from pathlib import Path
sys.path.insert(0, "src")
import numpy as np
import cv2
import torch

OUT = Path(os.environ.get("OUT", "/tmp/gen_out")); OUT.mkdir(parents=True, exist_ok=True)
BUDGET, DEVICE = float(sys.argv[1]), sys.argv[2]
HERE = Path(os.environ.get("GEN_STORE", ".gpu/gen_store")).resolve()
MAIN, SILENT, CACHE, RUN = HERE / "main", HERE / "silent", Path("/tmp/gen_frames"), Path("/tmp/genrun")
t0 = time.time()
from rhythmhead.data.store import ClipStore


def decode(job):
    path, out, n = job
    cap = cv2.VideoCapture(str(path)); frames = []
    while True:
        ok, f = cap.read()
        if not ok: break
        frames.append(f[:, :, ::-1])
    arr = np.stack(frames) if frames else np.zeros((0, 256, 256, 3), np.uint8)
    if len(arr) != n:
        print("frame count", path.parent.name, len(arr), "vs", n, flush=True)
        arr = arr[:n] if len(arr) >= n else np.concatenate([arr, np.repeat(arr[-1:], n - len(arr), 0)])
    np.save(out, np.ascontiguousarray(arr))


CACHE.mkdir(parents=True, exist_ok=True)
jobs = []
for root in (MAIN, SILENT):
    st = ClipStore(root)
    tag = hashlib.sha1(str(st.root.resolve()).encode()).hexdigest()[:8]
    jobs += [(st.clip_dir(c) / "frames.mp4", CACHE / f"{tag}_{c}.npy", st.record(c)["frames"]) for c in st.ids()]
with Pool(14) as pool:
    pool.map(decode, jobs)
print(f"decoded {len(jobs)} clips in {time.time() - t0:.1f}s", flush=True)

if DEVICE == "cuda" and os.environ.get("BENCH", "1") != "0":
    torch.backends.cudnn.benchmark = True
    print(torch.__version__, torch.cuda.get_device_name(0), flush=True)
    try:
        from rhythmhead.bench.generator import run as bench
        res = {}
        for preset in ("fast", "paper"):
            res.update(bench(preset, device="cuda", n_frames=20))
        (OUT / "bench_gpu.json").write_text(json.dumps(res, indent=1))
        for k, v in res.items():
            print(k, f"{1000 / v['fps']:.2f} ms", v.get("peak_gpu_mb"), flush=True)
    except Exception:
        import traceback; traceback.print_exc()
    print(f"bench done at {time.time() - t0:.0f}s", flush=True)

from rhythmhead.config import load_config
from rhythmhead.training.generator_task import GeneratorConfig, GeneratorTask
from rhythmhead.training.trainer import Trainer

over = {"trainer": {"batch_size": int(os.environ.get("BS", 8)), "max_steps": 10 ** 7, "log_every": 25,
                    "val_every": 400, "checkpoint_every": 10 ** 7, "num_workers": int(os.environ.get("NW", 12)),
                    "val_batches": 4},
        **({"init_from": os.environ["INIT"]} if os.environ.get("INIT") else {}),
        **({"loss": {"rec": float(os.environ["REC"])}} if os.environ.get("REC") else {}),
        "data": {"extra_stores": [str(SILENT)], "frame_cache_dir": str(CACHE), "cache_clips": 64}}
task = GeneratorTask(load_config(GeneratorConfig, "generator", "fast", over), str(MAIN))
shutil.rmtree(RUN, ignore_errors=True)
trainer = Trainer(task, RUN, DEVICE)
deadline = time.time() + BUDGET
orig = task.train_step


def step(batch, s, opts):
    out = orig(batch, s, opts)
    if time.time() > deadline:
        trainer.max_steps = s + 1
    return out


task.train_step = step
t1 = time.time()
trainer.fit()
print(f"trained {trainer.step} steps in {time.time() - t1:.0f}s", flush=True)
for name in ("export/generator.safetensors", "export/generator.json", "stats.jsonl", "val.jsonl"):
    if (RUN / name).exists():
        shutil.copy(RUN / name, OUT / Path(name).name)

if os.environ.get("EVAL", "1") == "0":
    sys.exit(0)
from rhythmhead.evaluation.generator import evaluate_generator
settings, methods = evaluate_generator(MAIN, [str(RUN)], stride=6, max_frames=8, clips="val", device=DEVICE,
                                       identity=False, landmarks=False, examples="/tmp/gen_png")
(OUT / "eval_gpu.json").write_text(json.dumps({"settings": settings, "methods": methods}, indent=1, default=str))
print(methods, flush=True)
pngs = sorted(Path("/tmp/gen_png").glob("*.png"))
grid = np.concatenate([cv2.imread(str(p)) for p in pngs[:3]], 0)
cv2.imwrite(str(OUT / "samples.jpg"), grid, [cv2.IMWRITE_JPEG_QUALITY, 90])
print(f"total {time.time() - t0:.0f}s", flush=True)
