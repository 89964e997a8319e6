"""One entry point for every role; the role is chosen by flag.

  python -m serl_ext.loop.main --learner --config=configs/train.py:pick-place,hil_serl
  python -m serl_ext.loop.main --actor   --config=configs/train.py:pick-place,hil_serl
  python -m serl_ext.loop.main --eval    --config=configs/train.py:pick-place,hil_serl

Any config field can be overridden (``--config.seed=1``, ``--config.transport.ip=10.0.0.2``).
``--eval`` restores the newest learner checkpoint of the run folder and runs
``actor.eval_episodes`` deterministic episodes (``--eval_episodes`` overrides), writing
``eval.json`` into the run folder.
"""

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/train.py:pick-place,hil_serl", "Training config: FILE.py:TASK,ALGORITHM."
)
_ACTOR = flags.DEFINE_bool("actor", False, "Run the actor process.")
_LEARNER = flags.DEFINE_bool("learner", False, "Run the learner process.")
_EVAL = flags.DEFINE_bool("eval", False, "Evaluate the newest checkpoint of the run.")
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 0, "Episodes for --eval (0: config value).")
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "Print the resolved config as JSON and exit.")


def _evaluate_checkpoint(config):
    from serl_ext.loop import common
    from serl_ext.loop.checkpoint import Checkpointer
    from serl_ext.loop.evaluation import evaluate

    run_dir = common.run_dir_for(config)
    checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
    agent, _, _ = common.agent_for_task(config)
    agent, counters = checkpointer.restore_agent(agent)  # the agent only, not the replay buffers
    episodes = _EVAL_EPISODES.value or int(config.actor.eval_episodes)
    metrics = evaluate(agent, config, episodes)
    result = {
        "task": config.task,
        "algorithm": config.algorithm,
        "seed": int(config.seed),
        "learner_step": counters["learner_step"],
        "episodes": episodes,
        "eval_success_rate": metrics["eval/success_rate"],
        "eval_return": metrics["eval/return"],
        "eval_length": metrics["eval/length"],
    }
    common.atomic_write_json(os.path.join(run_dir, "eval.json"), result)
    print(result)
    checkpointer.close()
    return result


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Orbax and friends log every checkpoint step at INFO through absl; keep the console readable.
    absl_logging.set_verbosity(absl_logging.WARNING)
    if _PRINT_CONFIG.value:
        print(_CONFIG.value.to_json_best_effort(indent=2, sort_keys=True))
        return
    roles = [_ACTOR.value, _LEARNER.value, _EVAL.value]
    if sum(roles) != 1:
        sys.exit("choose exactly one role: --actor, --learner or --eval")
    config = _CONFIG.value
    if _ACTOR.value:
        from serl_ext.loop.actor import run_actor

        summary = run_actor(config)
        print({k: v for k, v in summary.items() if k != "eval_history"})
    elif _LEARNER.value:
        from serl_ext.loop.learner import run_learner

        print(run_learner(config))
    else:
        _evaluate_checkpoint(config)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
