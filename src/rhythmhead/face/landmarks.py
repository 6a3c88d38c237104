"""MediaPipe Face Mesh (478 3-D points) and the fixed map from its vertices to the 68-point iBUG layout.

:class:`FaceMesher` wraps ``mediapipe.solutions.face_mesh`` (``refine_landmarks=True``: 468 mesh vertices + 10 iris points)
and returns the points in pixels of the image it was given: ``(x·W, y·H, z·W)``, x right, y down, larger z farther from
the camera (docs/ARCHITECTURE.md). ``static_image_mode=True`` runs detection on every image (photos); ``False`` tracks
the face from frame to frame (video: much faster, and temporally steadier).

The iBUG-68 layout is a constant index map :data:`MESH_TO_68` into the mesh, so the 68 landmarks are 3-D and share the
mesh's units. How the map was chosen (``tools/make_canonical.py --fit-map`` reproduces it): on the real face photos of
``../shared/media/face_photo`` (33 of the 34 photos have a dlib face), dlib's 68-point predictor (face_recognition_models'
``shape_predictor_68_face_landmarks.dat``) and MediaPipe were run; for every dlib point i and mesh vertex v the 2-D
distance divided by the inter-ocular distance (between the two eyes' landmark centres) was computed per photo, and
``MESH_TO_68[i]`` is the vertex with the smallest median over the photos (iris points 468–477 excluded). The mean error of
the map is 5.6 % of the inter-ocular distance on those photos, and 5.6 % too when each photo is left out of the fit that
scores it (so the map is not fitted to those photos' noise); tests/face/test_landmarks_media.py checks < 8 %. Jaw points
are the least certain (dlib places them on the 2-D silhouette, MediaPipe on the fixed 3-D face oval: 7–15 %).

:func:`canonical_68` / :func:`canonical_mesh_478` load the package's canonical frontal face (``assets/``, built by
``tools/make_canonical.py``), in pixels of the 256² paper crop.
"""
from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from .native_log import quiet_native_stderr, start_quietly

__all__ = ["MESH_TO_68", "N_MESH", "FaceMesher", "mesh_to_68", "canonical_68", "canonical_mesh_478"]

N_MESH = 478

# iBUG-68 index -> MediaPipe Face Mesh vertex (see the module docstring for how each was chosen).
MESH_TO_68: tuple[int, ...] = (
    # jaw 0-16 (image left to right)
    127, 227, 177, 215, 138, 136, 149, 148, 152, 377, 378, 365, 367, 435, 361, 454, 356,
    # right brow 17-21, left brow 22-26 (subject's right is on the image left)
    70, 63, 105, 66, 55, 336, 296, 334, 293, 300,
    # nose bridge 27-30, nostrils 31-35
    168, 197, 195, 4, 75, 97, 2, 326, 305,
    # right eye 36-41, left eye 42-47
    33, 160, 158, 155, 153, 144, 382, 385, 387, 263, 373, 380,
    # outer lips 48-59
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    # inner lips 60-67
    78, 82, 13, 312, 325, 317, 14, 87,
)
assert len(MESH_TO_68) == 68


def mesh_to_68(mesh):
    """``(..., 478, 3)`` (or ``(..., 468, 3)``) mesh -> ``(..., 68, 3)`` iBUG landmarks; numpy arrays or torch tensors."""
    if hasattr(mesh, "index_select"):  # torch
        import torch

        return mesh.index_select(-2, torch.as_tensor(MESH_TO_68, device=mesh.device))
    return np.asarray(mesh)[..., MESH_TO_68, :]


@functools.lru_cache(maxsize=None)
def _asset(name: str) -> np.ndarray:
    path = resources.files("rhythmhead") / "assets" / name
    with resources.as_file(path) as p:
        arr = np.load(p, allow_pickle=False).astype(np.float32)
    arr.setflags(write=False)
    return arr


def canonical_68() -> np.ndarray:
    """The canonical frontal 68-point face ``(68, 3)`` float32, in pixels of the 256² crop (a fresh copy)."""
    return _asset("canonical_68.npy").copy()


def canonical_mesh_478() -> np.ndarray:
    """The canonical frontal MediaPipe mesh ``(478, 3)`` float32, same frame as :func:`canonical_68` (a fresh copy).

    ``mesh_to_68(canonical_mesh_478())`` equals :func:`canonical_68`.
    """
    return _asset("canonical_mesh_478.npy").copy()


class FaceMesher:
    """MediaPipe Face Mesh with iris refinement: an RGB image -> ``(478, 3)`` float32 points in pixels, or None.

    Args:
        static_image_mode: True for unrelated photos (detect every time); False for the frames of one video (track).
        max_num_faces: how many faces :meth:`all_faces` may return.
        min_detection_confidence: MediaPipe face detector threshold.
        min_tracking_confidence: below this the tracker re-detects (video mode).
    """

    def __init__(self, static_image_mode: bool = False, max_num_faces: int = 1,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        from mediapipe.python.solutions import face_mesh

        self._mesh = start_quietly(lambda: face_mesh.FaceMesh(
            static_image_mode=static_image_mode,
            max_num_faces=max_num_faces,
            refine_landmarks=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        ))

    def all_faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Every face found in ``rgb`` ``(H, W, 3)`` uint8: a list of ``(478, 3)`` float32 pixel arrays."""
        rgb = np.ascontiguousarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"FaceMesher expects (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        with quiet_native_stderr():
            result = self._mesh.process(rgb)
        faces = []
        for lm in result.multi_face_landmarks or ():
            pts = np.array([(p.x, p.y, p.z) for p in lm.landmark], dtype=np.float32)
            pts *= np.array([w, h, w], dtype=np.float32)
            faces.append(pts)
        return faces

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """The first face in ``rgb`` as ``(478, 3)`` float32 pixels, or None when there is none."""
        faces = self.all_faces(rgb)
        return faces[0] if faces else None

    def close(self) -> None:
        """Release the MediaPipe graph."""
        if self._mesh is not None:
            with quiet_native_stderr():
                self._mesh.close()
            self._mesh = None

    def __enter__(self) -> "FaceMesher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
