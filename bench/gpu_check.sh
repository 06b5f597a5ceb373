#!/usr/bin/env bash
# fleet on a real NVIDIA GPU (issue 16; docs/gpu.md, "Checking on a GPU machine").
#
#   bench/gpu_check.sh prepare   here, with network: onnxruntime-gpu's wheel cut in parts small
#                                enough to copy one per call, and the wheels fleet needs that
#                                the GPU machine lacks, under build/gpu-check/ (git ignores it)
#   bench/gpu_check.sh parts     on the GPU machine: which parts have arrived
#   bench/gpu_check.sh [run]     on the GPU machine: join and install what arrived, then run
#                                the vision and llm suites and a larger CNN on `local` with
#                                the CPU provider, CUDA and (where its libraries are) TensorRT;
#                                print latency (end to end and compute only), first-load and
#                                engine-build cost, GPU memory and the provider that ran; keep
#                                the store, the summary and nvidia-smi/NVML captures in $OUT
#
# Without a GPU, or before every part has arrived, `run` says so in one line and measures the
# CPU provider alone, so the script is checked on any machine.
set -euo pipefail
shopt -s nullglob

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAGE=$ROOT/build/gpu-check
PY=${PYTHON:-python3}
# onnxruntime-gpu 1.30.0 from PyPI is built for CUDA 13 (objdump -p of its CUDA provider:
# libcudart.so.13, libcublas.so.13, libcudnn.so.9; TensorRT's: libnvinfer.so.10) and matches
# the CPU onnxruntime 1.30 of the H200 machine. Its wheel is 247 MB; a call carries 64 MiB.
ORT_VERSION=${ORT_VERSION:-1.30.0}
PART_MIB=56
# What `fleet run` imports that the GPU machine's image does not have (docs/gpu.md).
DEPS=(paramiko bcrypt cryptography pynacl cffi pycparser invoke influxdb-client reactivex)
PIP_TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp
    --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

say() { printf '== %s\n' "$*"; }

prepare() {
    mkdir -p "$STAGE/download" "$STAGE/deps"
    "$PY" -m pip download -q --no-deps "${PIP_TARGET[@]}" -d "$STAGE/download" \
        "onnxruntime-gpu==$ORT_VERSION"
    local wheel
    wheel=$(ls "$STAGE"/download/onnxruntime_gpu-"$ORT_VERSION"-*.whl)
    rm -f "$STAGE"/ort.part-*
    split -b "${PART_MIB}M" "$wheel" "$STAGE/ort.part-"
    (cd "$STAGE/download" && sha256sum "$(basename "$wheel")") >"$STAGE/wheel.sha256"
    local pieces=("$STAGE"/ort.part-*)
    echo "${#pieces[@]}" >"$STAGE/parts.count"
    "$PY" -m pip download -q --no-deps "${PIP_TARGET[@]}" -d "$STAGE/deps" "${DEPS[@]}"
    say "wheel $(basename "$wheel"): $(cat "$STAGE/parts.count") parts of ${PART_MIB} MiB"
    say "copy them in consecutive calls while the machine stays warm, each with its manifest:"
    local part
    for part in "${pieces[@]}"; do
        printf '  carry: build/gpu-check/%s build/gpu-check/wheel.sha256 build/gpu-check/%s\n' \
            "$(basename "$part")" parts.count
    done
    say "the last call also carries build/gpu-check/deps and runs: bench/gpu_check.sh run"
}

parts() {
    local have=("$STAGE"/ort.part-*)
    echo "onnxruntime-gpu parts here: ${#have[@]} of $(cat "$STAGE/parts.count" 2>/dev/null || echo "?")"
}

# onnxruntime-gpu into $STAGE/site from its parts, once; returns 1 when they are not all here.
install_ort_gpu() {
    [[ -f $STAGE/site/.ort-gpu-$ORT_VERSION ]] && return 0
    local have=("$STAGE"/ort.part-*)
    [[ -f $STAGE/parts.count && ${#have[@]} -eq $(cat "$STAGE/parts.count") ]] || return 1
    local name
    name=$(awk '{print $2}' "$STAGE/wheel.sha256")
    cat "${have[@]}" >"$STAGE/$name"
    (cd "$STAGE" && sha256sum -c --quiet wheel.sha256) || {
        echo "onnxruntime-gpu parts joined to a wrong checksum: copy them again" >&2
        return 1
    }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$STAGE/site" \
        "$STAGE/$name"
    rm -f "$STAGE/$name"
    touch "$STAGE/site/.ort-gpu-$ORT_VERSION"
}

# The CUDA libraries of the nvidia-* pip packages (PyTorch's) on the loader's path.
cuda_library_path() {
    "$PY" - <<'EOF' 2>/dev/null || true
import os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
found = set()
for base in nvidia.__path__:
    for folder, _, files in os.walk(base):
        if any(".so" in f for f in files) and os.path.basename(folder) == "lib":
            found.add(folder)
print(":".join(sorted(found)))
EOF
}

# Generated suites: each of vision, llm and the CNN once per provider (ONNX variants only:
# the TFLite converter needs a network the GPU machine does not have).
write_suites() {
    "$PY" - "$ROOT" "$STAGE/suites" "$STAGE/models" "$@" <<'EOF'
import sys
from pathlib import Path

import yaml

root, out, models = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
providers = sys.argv[4:]
out.mkdir(parents=True, exist_ok=True)
options = {"tensorrt": {"engine_cache": True}}


def cnn():
    """ResNet-50 (random weights, nothing downloaded) where torch is, else PP-OCR's detector
    where zoo/pretrained has it built; None without either."""
    path = models / "resnet50.onnx"
    try:
        import torch
        import torchvision
    except ImportError:
        ocr = root / "zoo" / "pretrained" / "ppocr_det.onnx"  # its input's size is open
        return {"name": "ppocr_det", "path": str(ocr), "shapes": {"x": ["batch", 3, 320, 320]}} \
            if ocr.exists() else None
    if not path.exists():
        models.mkdir(parents=True, exist_ok=True)
        net = torchvision.models.resnet50(weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        try:  # the TorchScript exporter, where this torch still has it
            torch.onnx.export(net, (x,), str(path), input_names=["input"], dynamo=False)
        except Exception as exc:  # noqa: BLE001  # any failure: the other exporter
            print(f"TorchScript export failed ({exc}); dynamo export", file=sys.stderr)
            # Weights in the file: fleet sends the model as one file.
            torch.onnx.export(
                net, (x,), str(path), input_names=["input"], dynamo=True, external_data=False
            )
    return {"name": "resnet50", "path": str(path)}


suites = []
for name in ("vision", "llm"):
    suite = yaml.safe_load((root / "suites" / f"{name}.yaml").read_text())
    for model in suite["models"]:
        model["variants"] = [v for v in model["variants"] if v.startswith("onnx")]
        for key in ("path", "dataset", "calibration"):
            if key in model:
                model[key] = str((root / "suites" / model[key]).resolve())
    suites.append(suite)
big = cnn()
if big is None:
    print("== no larger CNN: no torch (ResNet-50), no zoo/pretrained/ppocr_det.onnx", file=sys.stderr)
else:
    suites.append({
        "name": "cnn",
        "measure": {"warmup_iterations": 10, "min_iterations": 50, "max_seconds": 10,
                    "repetitions": 2, "threads": 8},
        "models": [{**big, "variants": ["onnx:fp32", "onnx:fp16"]}],
    })
for suite in suites:
    for provider in providers:
        doc = {**suite, "name": f"{suite['name']}-{provider}"}
        doc["measure"] = {**suite.get("measure", {}), "provider": provider}
        if provider in options:
            doc["measure"]["provider_options"] = options[provider]
        (out / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        print(out / f"{doc['name']}.yaml")
EOF
}

summary() {
    "$PY" - "$STORE" <<'EOF'
import sys
from pathlib import Path

from fleet.results.store import Store
from fleet.results.tables import format_table

store = Store(Path(sys.argv[1]))
columns = ["suite", "model", "variant", "ran on", "p50 ms", "compute p50", "p95 ms", "load ms",
           "build ms", "cache hit", "GPU MB", "MB scope", "clock max", "power W", "valid"]
rows = []


def cell(r, name, fmt=".3f"):
    value = r.fields.get(name)
    if isinstance(value, bool) or isinstance(value, str):
        return str(value) if value != "" else "-"
    return "-" if value is None else format(value, fmt)


for run in store.runs():
    for r in store.records(run.run_id, "result"):
        rows.append([run.suite, r.tags.get("model", "?"), r.tags.get("variant", "?"),
                     f"{r.tags.get('runtime')}/{r.tags.get('provider')}",
                     cell(r, "latency_ms_p50"), cell(r, "compute_latency_ms_p50"),
                     cell(r, "latency_ms_p95"), cell(r, "load_ms", ".0f"),
                     cell(r, "engine_build_ms", ".0f"), cell(r, "engine_cache_hit"),
                     cell(r, "gpu_memory_peak_mb", ".0f"), cell(r, "gpu_memory_scope"),
                     cell(r, "gpu_clock_mhz_max", ".0f"), cell(r, "gpu_power_w_mean", ".0f"),
                     r.status if r.status != "ok" else cell(r, "valid")])
print(format_table(columns, rows, "fleet on this machine (each suite's name ends in the provider asked for)"))
EOF
}

capture_gpu() {
    local dir=$STAGE/fixtures
    mkdir -p "$dir"
    nvidia-smi >"$dir/nvidia_smi.txt" 2>&1 || true
    nvidia-smi -q >"$dir/nvidia_smi_q.txt" 2>&1 || true
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        >"$dir/nvidia_smi_gpus_h200.txt" 2>&1 || true
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits \
        >"$dir/nvidia_smi_memory_used_h200.txt" 2>&1 || true
    local fields=index,clocks.sm,temperature.gpu,power.draw,utilization.gpu,memory.used
    nvidia-smi --query-gpu="$fields,clocks_event_reasons.active" --format=csv,noheader,nounits \
        >"$dir/nvidia_smi_query_gpu_h200_$1.txt" 2>&1 || true
    nvidia-smi --query-gpu="$fields,clocks_throttle_reasons.active" \
        --format=csv,noheader,nounits >"$dir/nvidia_smi_query_gpu_h200_old_field.txt" 2>&1 || true
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits \
        >"$dir/nvidia_smi_compute_apps_h200_$1.txt" 2>&1 || true
    nvidia-smi --query-gpu=index,uuid --format=csv,noheader \
        >"$dir/nvidia_smi_index_uuid_h200.txt" 2>&1 || true
    "$PY" - >"$dir/nvml_h200_$1.json" 2>&1 <<'EOF' || true
import json

import pynvml as n

n.nvmlInit()
h = n.nvmlDeviceGetHandleByIndex(0)
reasons = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None)
reasons = reasons or n.nvmlDeviceGetCurrentClocksThrottleReasons
print(json.dumps({
    "name": n.nvmlDeviceGetName(h),
    "driver": n.nvmlSystemGetDriverVersion(),
    "sm_clock_mhz": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
    "temp_c": n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU),
    "power_mw": n.nvmlDeviceGetPowerUsage(h),
    "util_gpu": n.nvmlDeviceGetUtilizationRates(h).gpu,
    "memory_used_b": n.nvmlDeviceGetMemoryInfo(h).used,
    "clocks_event_reasons": reasons(h),
    "processes": [[p.pid, p.usedGpuMemory] for p in n.nvmlDeviceGetComputeRunningProcesses(h)],
}, indent=1, default=str))
EOF
}

watch_gpu() {
    local fields=index,clocks.sm,temperature.gpu,power.draw,utilization.gpu,memory.used
    nvidia-smi --query-gpu="$fields,clocks_event_reasons.active" --format=csv,noheader,nounits \
        -lms 1000 >"$1/nvidia_smi_query_gpu_h200_loop.txt" 2>&1 &
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms 1000 \
        >"$1/nvidia_smi_compute_apps_h200_loop.txt" 2>&1 &
    trap 'kill $(jobs -p) 2>/dev/null' TERM
    wait
}

run() {
    local out=${OUT:-$STAGE/out}
    mkdir -p "$out" "$STAGE"
    STORE=$STAGE/results-$(date -u +%Y%m%dT%H%M%SZ).sqlite
    export FLEET_HOME=$STAGE/home FLEET_CACHE=$STAGE/cache
    export PYTHONPATH=$STAGE/site:$ROOT:$ROOT/agents${PYTHONPATH:+:$PYTHONPATH}
    local providers=(cpu) gpu=""
    if gpu=$(nvidia-smi -L 2>/dev/null) && [[ -n $gpu ]]; then
        say "GPU: $gpu"
        capture_gpu idle
        if install_ort_gpu; then
            say "onnxruntime-gpu $ORT_VERSION installed in $STAGE/site"
        else
            say "no onnxruntime-gpu: $(parts); CUDA needs every part (bench/gpu_check.sh prepare)"
        fi
        local libs
        libs=$(cuda_library_path)
        export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        local available
        available=$("$PY" -c 'import onnxruntime as o; print(" ".join(o.get_available_providers()))')
        say "onnxruntime $("$PY" -c 'import onnxruntime as o; print(o.__version__)'): $available"
        [[ $available == *CUDAExecutionProvider* ]] && providers+=(cuda)
        if [[ $available == *TensorrtExecutionProvider* ]] &&
            "$PY" -c 'import ctypes; ctypes.CDLL("libnvinfer.so.10")' 2>/dev/null; then
            providers+=(tensorrt)
        else
            say "no TensorRT: libnvinfer.so.10 is not on this machine; CUDA and CPU only"
        fi
    else
        say "no NVIDIA GPU here (nvidia-smi -L found none): measuring the CPU provider only"
    fi
    if compgen -G "$STAGE/deps/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$STAGE/site" \
            "$STAGE"/deps/*.whl
    fi
    "$PY" -c 'import paramiko, influxdb_client' || {
        echo "fleet needs paramiko and influxdb-client here: carry build/gpu-check/deps" >&2
        return 2
    }
    say "providers: ${providers[*]}"
    local suite rc status=0 runs=()
    mapfile -t runs < <(write_suites "${providers[@]}")
    # The TensorRT suites twice: the first builds each engine, the second loads it from cache.
    for suite in "${runs[@]}"; do
        [[ $suite == *-tensorrt.yaml ]] && runs+=("$suite")
    done
    local watch=()
    if [[ -n $gpu ]]; then  # the GPU while the suites run: the samplers' own queries, looped
        watch_gpu "$STAGE/fixtures" & watch+=($!)
    fi
    for suite in "${runs[@]}"; do
        say "fleet run $(basename "$suite")"
        rc=0
        timeout 300 "$PY" -m fleet run "$suite" --store "$STORE" -q || rc=$?
        # 1: a budget of the suite (set for small boards) failed; the figures still stand.
        if ((rc > 1)); then status=$rc; fi
    done
    if [[ -n $gpu ]]; then
        kill "${watch[@]}" 2>/dev/null || true
        capture_gpu after
    fi
    summary | tee "$out/summary.txt"
    cp "$STORE" "$out/results.sqlite"
    if [[ -d $STAGE/fixtures ]]; then
        tar -C "$STAGE" -czf "$out/fixtures.tar.gz" fixtures
    fi
    return "$status"
}

case ${1:-run} in
prepare) prepare ;;
parts) parts ;;
run) run ;;
*)
    echo "usage: bench/gpu_check.sh [prepare|parts|run]" >&2
    exit 2
    ;;
esac
