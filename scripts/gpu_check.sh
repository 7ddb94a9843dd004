#!/usr/bin/env bash
# GPU smoke check: a short bf16-mixed fit on the GPU, fp16 export, then ONNX Runtime predict on
# the CUDA provider with IO binding. Prints the provider that ran and the throughput.
#   bash scripts/gpu_check.sh [RUN_DIR]
set -euo pipefail
run_dir=${1:-runs/gpu_check}
python - <<'PY'
import torch, onnxruntime as ort
assert torch.cuda.is_available(), "no CUDA GPU visible to torch"
print("torch", torch.__version__, "GPU:", torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())
print("onnxruntime", ort.__version__, ort.get_available_providers())
PY
rm -rf "$run_dir"
SECONDS=0
deepapps vision fit --run_dir "$run_dir" --trainer.accelerator gpu --trainer.precision bf16-mixed \
  --trainer.max_epochs 2 --export_fp16 true
echo "fit (2 epochs, bf16-mixed, export + ONNX evaluation): ${SECONDS} s"
deepapps vision predict --model "$run_dir/model.onnx" --provider cuda --out "$run_dir/pred_fp32.csv" "$run_dir/samples"
deepapps vision predict --model "$run_dir/model.fp16.onnx" --provider cuda --out "$run_dir/pred_fp16.csv" "$run_dir/samples"
python - "$run_dir" <<'PY'
import sys, time, numpy as np
from deepapps.core.runtime.session import load_model
run_dir = sys.argv[1]
for name in ("model.onnx", "model.fp16.onnx"):
    model = load_model(f"{run_dir}/{name}", provider="cuda")
    size = model.meta["preprocess"]["size"]
    for batch in (1, 256):
        x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        for _ in range(5):
            model.run({"pixels": x})
        n, start = 50, time.perf_counter()
        for _ in range(n):
            model.run({"pixels": x})
        per = (time.perf_counter() - start) / n
        print(f"{name} {model.provider_note}: batch {batch}: {per * 1e3:.2f} ms, {batch / per:,.0f} images/s")
PY
