"""Converts a HiL-SERL demo pickle (examples/record_demos.py output) into episode files.

  python launchers/import_hil_serl_demos.py --file=demos.pkl --out=demos/my-task \
      [--obs_keys=state:state,wrist_1:pixels] [--no_squeeze]

Only for files you recorded yourself: see serl_ext/data/hil_serl_import.py on why a pickle is
never safe to load from elsewhere. The learner then reads the folder with
--config.demos.path=demos/my-task.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_FILE = flags.DEFINE_string("file", None, "HiL-SERL demo pickle.", required=True)
_OUT = flags.DEFINE_string("out", None, "Output folder of episode files.", required=True)
_KEYS = flags.DEFINE_string("obs_keys", "", "SRC:DST,... observation keys to keep (default all).")
_NO_SQUEEZE = flags.DEFINE_bool("no_squeeze", False, "Keep the leading frame-stack axis.")


def main(argv):
    del argv
    from serl_ext.data.hil_serl_import import import_hil_serl_demos

    keys = None
    if _KEYS.value:
        keys = dict(item.split(":", 1) for item in _KEYS.value.split(","))
    paths = import_hil_serl_demos(_FILE.value, _OUT.value, obs_keys=keys,
                                  squeeze_frame_stack=not _NO_SQUEEZE.value)
    print(f"wrote {len(paths)} episodes to {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
