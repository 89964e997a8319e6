"""UniIntervene in the learner's extension slot (``serl_ext/loop/extension.py``): the data tee
(every transition to the trainer's episode assembler), the training schedule, the
``"uniintervene"`` message part and the files under ``{run_dir}/uniintervene``.
``configs/algorithms.py`` names :func:`make_learner_extension` for the
``hil_serl+uniintervene`` algorithms.
"""

import os
import time
from typing import Any, Dict, Optional

from uniintervene_jax.message import PART_NAME
from uniintervene_jax.online import OnlineUniIntervene


class UniInterveneLearnerExtension:
    """:class:`OnlineUniIntervene` in the learner's extension slot
    (``serl_ext.loop.extension.LearnerExtension``): every transition feeds the episode
    assembler, one training round per :meth:`train_step` (``train_period`` schedule) and per
    warm-up pass (``train_during_warmup``), the payload goes out as the ``"uniintervene"``
    message part at most every ``publish_period`` learner steps (or when forced), and its
    files live in ``{run_dir}/uniintervene``.

    Args:
      ui: the trainer. publish_period: learner steps between parts. train_during_warmup:
        train while the agent waits for ``learner.training_starts``.
    """

    name = PART_NAME

    def __init__(self, ui: OnlineUniIntervene, publish_period: int, train_during_warmup: bool):
        self.ui = ui
        self.publish_period = int(publish_period)
        self.train_during_warmup = bool(train_during_warmup)
        self._published_step = -(10**9)

    def on_transition(self, transition: Dict[str, Any]) -> None:
        self.ui.insert(transition)

    def warmup_step(self) -> bool:
        if not self.train_during_warmup:
            return False
        self.ui.warmup_step()  # the UniIntervene models need no agent warm-up
        return True

    def train_step(self, learner_step: int) -> None:
        self.ui.step(learner_step)

    def message_part(self, learner_step: int, force: bool) -> Optional[Dict[str, Any]]:
        # A few MB; re-sent even when unchanged, so an actor that connects late still gets it.
        if not force and learner_step - self._published_step < self.publish_period:
            return None
        self._published_step = learner_step
        return self.ui.payload()

    def stats(self) -> Dict[str, float]:
        return self.ui.stats()

    def save(self, directory: str) -> None:
        self.ui.save(directory)

    def restore(self, directory: str) -> bool:
        return self.ui.restore(directory)


def make_learner_extension(config, obs_spec, action_dim: int, run_dir: str,
                           resumed: bool) -> Optional[UniInterveneLearnerExtension]:
    """The learner-extension factory of the ``hil_serl+uniintervene`` algorithms
    (``config.components.learner_extension``): restored from ``{run_dir}/uniintervene`` on
    resume; else, started from ``uniintervene.init_from`` (an offline pipeline folder), its
    models as they are (no demo pretraining; datasets and memory built from the demos); else
    pretrained on the first ``config.demos.num_demos`` demo episodes (``pretrain_steps``).
    None when ``config.uniintervene.enabled`` is off.

    Raises:
      ValueError: bad ``config.uniintervene`` (:func:`check_online_config`).
    """
    from tqdm import tqdm

    from serl_ext.data.episodes import list_episodes, load_episode
    from serl_ext.loop.common import demo_dir_for

    if not bool(config.uniintervene.enabled):
        return None
    directory = demo_dir_for(config)
    paths = list_episodes(directory) if os.path.isdir(directory) else []
    demos = [load_episode(p) for p in paths[: int(config.demos.num_demos)]]
    ui = OnlineUniIntervene(config, obs_spec, action_dim, demos)
    ext = UniInterveneLearnerExtension(ui, int(config.uniintervene.publish_period),
                                       bool(config.uniintervene.train_during_warmup))
    if resumed and ui.restore(os.path.join(run_dir, ext.name)):
        tqdm.write(f"[learner] UniIntervene models restored (version {ui.version})")
    elif str(config.uniintervene.get("init_from", "") or ""):
        # Started from an offline pipeline folder: its models were trained on the offline data
        # (demos, failing and assisted rollouts); a demos-only burst would pull the proxy value
        # toward successes only. Only the datasets and the memory are built here.
        t0 = time.time()
        ui.pretrain(steps=0)
        tqdm.write(f"[learner] UniIntervene started from {config.uniintervene.init_from} (no demo pretraining); "
                   f"datasets and memory built in {time.time() - t0:.1f} s")
    else:
        t0 = time.time()
        ui.pretrain(progress_bar=config.logging.progress_bar)
        tqdm.write(f"[learner] UniIntervene pretrained on {len(demos)} demos in {time.time() - t0:.1f} s")
    return ext
