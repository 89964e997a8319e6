#!/usr/bin/env bash
# Trigger head modes on pick-place (issue 13 item 3): the offline pipeline's data, value, labels
# and intervention stages with head_type=tvr_history, then the intervention stage alone with
# head_type=binary on the same data, value model and labels. The held-out reports go to
# benchmarks/results/trigger_head_modes/{tvr_history,binary}/intervention_report.json (best-F1
# threshold sweep, AUPRC, false triggers); results.txt is their summary. Run folders (data,
# models) go to runs/trigger_head_modes/ and are not committed. About 25 min on 2 cores.
#   bash benchmarks/trigger_head_modes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
A=runs/trigger_head_modes/tvr_history
B=runs/trigger_head_modes/binary
OUT=benchmarks/results/trigger_head_modes
mkdir -p "$OUT/tvr_history" "$OUT/binary"
python launchers/offline_pipeline.py --task=pick-place --run_dir=$A \
  --stages=data,value,labels,intervention --config.progress_bar=False > "$OUT/log_tvr_history.txt" 2>&1
mkdir -p $B/models
cp -r $A/data $A/labels.npz $B/ && cp -r $A/models/value $B/models/
python launchers/offline_pipeline.py --task=pick-place --run_dir=$B \
  --stages=intervention --config.intervention.head_type=binary --config.progress_bar=False > "$OUT/log_binary.txt" 2>&1
for mode in tvr_history binary; do
  cp runs/trigger_head_modes/$mode/report/intervention_report.json "$OUT/$mode/"
done
python - <<'PY' > "$OUT/results.txt"
import json
for mode in ("tvr_history", "binary"):
    r = json.load(open(f"benchmarks/results/trigger_head_modes/{mode}/intervention_report.json"))
    keys = ("num_decisions", "label_rate", "tau", "best_f1", "precision_at_best", "recall_at_best",
            "trigger_rate_at_best", "auprc", "false_trigger_rate_success",
            "false_trigger_step_rate_success")
    print(mode, {k: (round(r[k], 3) if isinstance(r.get(k), float) else r.get(k)) for k in keys})
PY
cat "$OUT/results.txt"
