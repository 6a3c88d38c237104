"""Copy stores compactly for the GPU run: frames.mp4 + compressed track.npz + manifest (no audio)."""
import json, shutil, sys
from pathlib import Path
import numpy as np
from rhythmhead.data.store import ClipStore
for src, dst in (("/work/store", ".gpu/gen_store/main"), ("/work/store_silent", ".gpu/gen_store/silent")):
    st = ClipStore(src); dst = Path(dst); dst.mkdir(parents=True, exist_ok=True)
    recs = []
    for r in st.manifest():
        try:
            tr = st.track(r["id"])
        except Exception as e:
            print("skip", r["id"], e); continue
        d = dst / r["id"]; d.mkdir(exist_ok=True)
        shutil.copy(st.clip_dir(r["id"]) / "frames.mp4", d / "frames.mp4")
        np.savez_compressed(d / "track.npz", **{k: (tr[k] if k == "pose" else tr[k].astype(np.float16)) for k in ("landmarks","mesh","pose","frontal")}, key_frame=np.int64(tr["key_frame"]), fps=np.float64(tr["fps"]))
        (d / ".done").write_text("")
        recs.append({**r, "has_audio": False})
    (dst / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in recs))
    print(src, len(recs))
