"""Imports an RLDS dataset (written by launchers/export_rlds.py or elsewhere) as episode files.

  python launchers/import_rlds.py --dataset=rlds_data/serl_episodes/1.0.0 --out=demos/my-task \
      [--split=train] [--prefix=episode] [--source=demo] [--task=gym:MyEnv-v0]

Each episode becomes {out}/{prefix}_NNNNNN.npz (serl_ext/data/episodes.py; numbering continues
after existing files). The learner reads such a folder as demos with
--config.demos.path=demos/my-task --config.demos.num_demos=N. Needs tensorflow-datasets
(pip install -e '.[rlds]'); a tfrecord dataset also needs tensorflow-cpu.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_DATASET = flags.DEFINE_string("dataset", None, "RLDS dataset folder (with dataset_info.json) or a "
                               "folder above it.", required=True)
_OUT = flags.DEFINE_string("out", None, "Output folder of episode files.", required=True)
_SPLIT = flags.DEFINE_string("split", "train", "tfds split.")
_PREFIX = flags.DEFINE_string("prefix", "episode", "Episode file name prefix.")
_SOURCE = flags.DEFINE_string("source", "", "Set metadata 'source' (e.g. demo) in every episode.")
_TASK = flags.DEFINE_string("task", "", "Set metadata 'task' in every episode.")


def main(argv):
    del argv
    from serl_ext.data.rlds import RLDSFormatError, import_to_episode_files

    metadata = {k: v for k, v in (("source", _SOURCE.value), ("task", _TASK.value)) if v}
    try:
        paths = import_to_episode_files(_DATASET.value, _OUT.value, prefix=_PREFIX.value,
                                        split=_SPLIT.value, metadata=metadata)
    except (RLDSFormatError, ValueError, FileNotFoundError, ImportError) as e:
        sys.exit(f"import_rlds: {e}")
    print(f"wrote {len(paths)} episodes to {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
