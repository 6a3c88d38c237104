"""The triangles of MediaPipe's 468-vertex face mesh, as a constant ``(F, 3)`` int array.

MediaPipe ships the tessellation only as an edge set (``FACEMESH_TESSELATION``, 1322 undirected edges). The triangles are
recovered from it in code (:func:`build_triangles`):

1. every 3-clique of the edge graph is a candidate triangle;
2. the two cliques whose three edges each border three cliques are *separating* triangles (they enclose a fan of real
   faces, around vertices 49/64/129 and 279/294/358) and are dropped, leaving the 852 faces of the open surface;
3. the three inner holes (two eyes, the mouth between the inner lips) are closed by zipping each hole's upper and lower
   chains between its two corners (:data:`HOLE_CORNERS`), so renders cover the eyes and the mouth interior as they are in
   the key frame — 46 more triangles, 898 in all (the size of MediaPipe's canonical face model);
4. triangles are oriented consistently across shared edges, with the global sign chosen so that a frontal face has
   positive signed area in image coordinates (x right, y down): ``(b - a) × (c - a) > 0``, i.e. clockwise on screen.

The result is cached as ``assets/face_triangles.npy``; ``python -m rhythmhead.face.tessellation`` rebuilds it (the
orientation step runs MediaPipe on ``skimage.data.astronaut()``, a public-domain portrait, to fix the global sign).
:func:`surface_count` tells how many leading rows are the original surface (the rest fill the holes).
"""
from __future__ import annotations

import collections
from functools import lru_cache
from importlib import resources

import numpy as np

NUM_VERTICES = 468  # face vertices; MediaPipe's 10 iris points (468..477) are not part of the surface
ASSET = "face_triangles.npy"

# (corner_a, corner_b) of each inner hole: right eye (subject's), left eye, inner mouth.
HOLE_CORNERS: tuple[tuple[int, int], ...] = ((33, 133), (362, 263), (78, 308))


def _edges() -> set[tuple[int, int]]:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    return {tuple(sorted(e)) for e in FACEMESH_TESSELATION}


def _surface_triangles(edges: set[tuple[int, int]]) -> list[tuple[int, int, int]]:
    nb = collections.defaultdict(set)
    for a, b in edges:
        nb[a].add(b)
        nb[b].add(a)
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in nb[a] & nb[b]})
    count = collections.Counter()
    for a, b, c in cliques:
        count.update([(a, b), (a, c), (b, c)])
    return [t for t in cliques if not all(count[e] > 2 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))]


def boundary_loops(tris) -> list[list[int]]:
    """Ordered vertex loops of the boundary edges (edges used by one triangle) of ``tris`` ``(F, 3)``."""
    count = collections.Counter()
    for a, b, c in tris:
        a, b, c = int(a), int(b), int(c)
        count.update([tuple(sorted(e)) for e in ((a, b), (b, c), (c, a))])
    adj = collections.defaultdict(list)
    for (a, b), n in count.items():
        if n == 1:
            adj[a].append(b)
            adj[b].append(a)
    seen, loops = set(), []
    for start in sorted(adj):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    return loops


def _zip_hole(loop: list[int], corner_a: int, corner_b: int) -> list[tuple[int, int, int]]:
    """Triangulate a hole by zipping its two chains (corner_a → corner_b both ways round the loop)."""
    i, j = loop.index(corner_a), loop.index(corner_b)
    n = len(loop)
    upper = [loop[(i + k) % n] for k in range((j - i) % n + 1)]  # a ... b
    lower = [loop[(i - k) % n] for k in range((i - j) % n + 1)]  # a ... b the other way
    tris = []
    u, l = 0, 0  # zip: advance along the chain that is relatively behind (by fraction of its length)
    while u < len(upper) - 1 or l < len(lower) - 1:
        adv_upper = l >= len(lower) - 1 or (u < len(upper) - 1 and (u + 1) / (len(upper) - 1) <= (l + 1) / (len(lower) - 1))
        if adv_upper:
            tris.append((upper[u], upper[u + 1], lower[l]))
            u += 1
        else:
            tris.append((upper[u], lower[l + 1], lower[l]))
            l += 1
    return [t for t in tris if len(set(t)) == 3]


def _orient(tris: np.ndarray) -> np.ndarray:
    """Flip triangles so that every shared edge is traversed in opposite directions by its two triangles."""
    tris = tris.copy()
    edge_tris = collections.defaultdict(list)
    for f, t in enumerate(tris):
        for k in range(3):
            edge_tris[tuple(sorted((t[k], t[(k + 1) % 3])))].append(f)
    done = np.zeros(len(tris), bool)
    for seed in range(len(tris)):
        if done[seed]:
            continue
        done[seed] = True
        queue = collections.deque([seed])
        while queue:
            f = queue.popleft()
            t = tris[f]
            directed = {(t[k], t[(k + 1) % 3]) for k in range(3)}
            for a, b in directed:
                for g in edge_tris[tuple(sorted((a, b)))]:
                    if done[g]:
                        continue
                    tg = tris[g]
                    if (a, b) in {(tg[k], tg[(k + 1) % 3]) for k in range(3)}:
                        tris[g] = tg[[0, 2, 1]]
                    done[g] = True
                    queue.append(g)
    return tris


def build_triangles(reference_mesh: np.ndarray | None = None) -> np.ndarray:
    """Triangles ``(898, 3) int32`` from MediaPipe's edge set (see the module docstring).

    Args:
        reference_mesh: ``(>=468, 3)`` MediaPipe points of a frontal face in image pixels, used only to fix the global
            orientation sign; ``None`` runs MediaPipe on ``skimage.data.astronaut()``.
    """
    surface = _surface_triangles(_edges())
    loops = boundary_loops(surface)
    fill = []
    for a, b in HOLE_CORNERS:
        loop = next(lp for lp in loops if a in lp and b in lp)
        fill += _zip_hole(loop, a, b)
    tris = _orient(np.array(surface + fill, dtype=np.int64))
    if reference_mesh is None:
        reference_mesh = _astronaut_mesh()
    p = np.asarray(reference_mesh, np.float64)[:, :2]
    a, b, c = p[tris[:, 0]], p[tris[:, 1]], p[tris[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    if np.sum(cross > 0) < np.sum(cross < 0):
        tris = tris[:, [0, 2, 1]]
    return tris.astype(np.int32)


def _astronaut_mesh() -> np.ndarray:
    import mediapipe as mp
    import skimage.data

    from .native_log import quiet_native_stderr

    image = np.ascontiguousarray(skimage.data.astronaut())
    with quiet_native_stderr(), mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                                refine_landmarks=True) as fm:
        res = fm.process(image)  # waits until the graph is idle: everything it logs falls inside the block
    if not res.multi_face_landmarks:
        raise RuntimeError("MediaPipe found no face in skimage.data.astronaut()")
    h, w = image.shape[:2]
    return np.array([(p.x * w, p.y * h, p.z * w) for p in res.multi_face_landmarks[0].landmark], np.float64)


@lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """The cached ``(898, 3) int32`` triangles of the 468-vertex face mesh (read-only array)."""
    path = resources.files("rhythmhead") / "assets" / ASSET
    with path.open("rb") as f:
        tris = np.load(f)
    tris.setflags(write=False)
    return tris


def surface_count() -> int:
    """How many leading rows of :func:`face_triangles` are MediaPipe's open surface (the rest close eyes and mouth)."""
    return len(_surface_triangles(_edges()))


if __name__ == "__main__":  # rebuild the asset
    from pathlib import Path

    out = Path(__file__).resolve().parents[1] / "assets" / ASSET
    tris = build_triangles()
    np.save(out, tris)
    print(f"wrote {out} {tris.shape}")
