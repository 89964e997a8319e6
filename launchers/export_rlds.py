"""Exports episode files (serl_ext/data/episodes.py, one .npz per episode) to an RLDS dataset.

  python launchers/export_rlds.py --episodes=runs/pick-place/hil_serl/seed0/episodes \
      --out=rlds_data [--name=serl_episodes] [--file_format=array_record] [--overwrite]

Writes {out}/{name}/1.0.0 through tensorflow-datasets (pip install -e '.[rlds]'); the step
fields are listed in serl_ext/data/rlds.py. array_record needs no TensorFlow; tfrecord (the
format of most published RLDS datasets) needs tensorflow-cpu. Read it back with
launchers/import_rlds.py or tfds.builder_from_directory(FOLDER).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_EPISODES = flags.DEFINE_string("episodes", None, "Folder of episode files (*.npz).", required=True)
_OUT = flags.DEFINE_string("out", None, "tfds data dir; the dataset goes to OUT/NAME/1.0.0.", required=True)
_NAME = flags.DEFINE_string("name", "serl_episodes", "Dataset name (lower snake case).")
_FORMAT = flags.DEFINE_enum("file_format", "array_record", ["array_record", "tfrecord"],
                            "Shard format (tfrecord needs TensorFlow).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing dataset of that name.")


def main(argv):
    del argv
    from serl_ext.data.episodes import EpisodeFormatError
    from serl_ext.data.rlds import export_episode_files

    try:
        folder = export_episode_files(_EPISODES.value, _OUT.value, name=_NAME.value,
                                      file_format=_FORMAT.value, overwrite=_OVERWRITE.value)
    except (EpisodeFormatError, ValueError, FileNotFoundError, NotADirectoryError, FileExistsError,
            ImportError) as e:
        sys.exit(f"export_rlds: {e}")
    print(f"wrote the RLDS dataset {folder}")


if __name__ == "__main__":
    app.run(main)
