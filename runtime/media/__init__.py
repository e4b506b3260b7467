"""Image and video files: which files (``files``), reading and writing them (``images``, ``writers``), and the
video pipeline (``pipeline``; the ffmpeg encoder in ``ffmpeg`` and ``segments``, the OpenCV one in ``video``).

Named ``media`` because ``io`` would shadow the standard library module.
"""
