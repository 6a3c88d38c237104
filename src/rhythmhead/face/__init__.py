"""Faces: detection and tracking (``detect``, ``track``), MediaPipe mesh and the iBUG-68 map (``landmarks``), dlib (``dlib_face``)."""
