"""Real-robot components: SpaceMouse reader (``spacemouse.py``); the UR env comes later (``ur.py``).

Device libraries (``pyspacemouse``, ``ur_rtde``) are imported lazily; install them with
``pip install -e .[robot]``.
"""
