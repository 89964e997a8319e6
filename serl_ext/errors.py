"""Errors an env raises that the loops treat specially (importing this module loads nothing else)."""


class ResetBlockedError(RuntimeError):
    """An env cannot start an episode until a person acts on it: an emergency stop to release, a
    protective stop to unlock on the pendant, a jammed arm to free. The actor waits and retries
    the reset (``serl_ext.envs.wrappers.WaitWhileResetBlocked``; ``actor.blocked_reset_retry_s``,
    ``actor.blocked_reset_timeout_s``) and keeps delivering its queue meanwhile, instead of ending
    the run. The message says what the person has to do."""
