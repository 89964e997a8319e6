"""Real-robot components.

- ``ur.py``: ``UREnv``, a UR arm on ur_rtde (servo thread + policy loop), with
  ``safety.py`` (the envelope), ``clock.py`` (real and lockstep clocks), ``gripper.py``
  (digital-output and Robotiq URCap grippers) and ``fake_rtde.py`` (ur_rtde stand-ins for
  tests and simulation).
- ``cameras.py``: threaded OpenCV / RealSense capture, crop, resize, stale-frame checks.
- ``spacemouse.py``: the SpaceMouse reader (pyspacemouse).

Device libraries (``ur_rtde``, ``pyspacemouse``, ``opencv``, ``pyrealsense2``) are imported
lazily; install them with ``pip install -e .[robot]``.
"""
