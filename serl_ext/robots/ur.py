"""UR arm env (ur_rtde), cameras and the safety envelope: not implemented yet.

The real-robot env comes later. It will expose the same interface as the
simulated tasks (dict observations ``{"state", <camera keys>}``, Box(-1, 1)
actions, ``info["success"]``) so that ``SpaceMouseIntervention`` and the
actor/learner loops run unchanged on it.
"""
