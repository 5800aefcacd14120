#!/usr/bin/env bash
# The whole GPU check of dqn-atari as one command (issue #8), for a GPU box that has torch with
# CUDA but maybe no network and no way to pip-install: it runs from this checkout, with the
# other dependencies importable (installed, or unpacked wheels on PYTHONPATH; README, "On a
# GPU"). It installs nothing.
#
#   PYTHONPATH=/tmp/site scripts/gpu_check.sh OUT_DIR             # on the GPU, under 8 minutes
#   scripts/gpu_check.sh --device cpu OUT_DIR                     # the non-CUDA parts, on a CPU
#   scripts/gpu_check.sh --device cpu --quick OUT_DIR             # every stage, tiny settings
#
# Options: --device cuda|cuda:N|cpu (default cuda, or $DQN_CHECK_DEVICE), --quick (tiny step
# counts, to debug the script: figures mean nothing), --budget SECONDS (the whole check; default
# 450), --limit-scale N (multiplies every stage's time limit and the budget; default 1 on CUDA,
# 6 on the CPU, whose stages are that much slower), --python PATH (default $PYTHON, else
# python3). OUT_DIR receives gpu_check.json (every stage's status and figures), stages/ (each
# stage's own JSON) and logs/ (each stage's output).
#
# Stages, in this order, each under `timeout` with its own limit (STAGE_LIMIT_S below); one that
# fails or times out is recorded and the check goes on. The whole check stops starting stages
# when its budget is spent (what is left is recorded as skipped), so it ends in about
# --budget + 10 s whatever happens:
#   info       python, torch, CUDA, GPU and the dependencies found; a failure here (no CUDA
#              device, a missing dependency) stops the check: every stage would fail
#   pytest     pytest -m cuda tests/test_cuda.py (skipped on a machine without CUDA)
#   e2e_N_S    end-to-end dqn-train, num_envs=N, setting S, at the Nature replay ratio: agent
#              steps/s after learning_starts (num_envs N only where the machine has N cores)
#   emulator   the games alone: raw ALE frames/s, phi agent steps/s of one game and of N game
#              workers (no learning): what bounds end-to-end agent steps/s from the CPU side
#   learner_*  learner updates/s, batch 32, with and without sampling from the replay
#   replay     replay insert rate (one game, and 16 games' writes) and batch-32 sample rate
#   sb3        Stable-Baselines3's DQN on the same device (skipped when it cannot be imported)
#   ops        top-level aten ops per agent step of issue #9's dqn-train run, under the profiler
#   replay_1m  bytes of a 1M-transition replay memory on the device, and the time to fill it
#   e2e_...    the other end-to-end settings, the one asked for by neither issue last
#   variants   the DQN family's eager learner updates/s (each preset and component) against DQN's
# The defaults fit an H100/H200-class GPU with 16 cores; the limits are estimates from runs of
# the same stages there and on 2 CPU cores.
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE="${DQN_CHECK_DEVICE:-cuda}"
QUICK=0
TOTAL_BUDGET_S=450 # stages start only while this much time has not passed; 8 minutes in all
LIMIT_SCALE=""
PY="${PYTHON:-python3}"
OUT=""

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --device) DEVICE="${2:?--device needs a value}"; shift 2 ;;
    --device=*) DEVICE="${1#*=}"; shift ;;
    --quick) QUICK=1; shift ;;
    --budget) TOTAL_BUDGET_S="${2:?--budget needs seconds}"; shift 2 ;;
    --limit-scale) LIMIT_SCALE="${2:?--limit-scale needs a number}"; shift 2 ;;
    --python) PY="${2:?--python needs a path}"; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || usage; OUT="$1"; shift ;;
    esac
done
[ -n "$OUT" ] || usage
command -v "$PY" >/dev/null || { echo "gpu_check: no python at '$PY' (use --python)" >&2; exit 2; }
command -v timeout >/dev/null || { echo "gpu_check: needs coreutils timeout" >&2; exit 2; }

mkdir -p "$OUT/stages" "$OUT/logs" || exit 2
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT/stages.tsv" "$OUT"/stages/* "$OUT"/logs/*
WORK="$OUT/work" # run directories of the benchmark; removed at the end
mkdir -p "$WORK"
# This checkout's dqn_atari first; what the caller put on PYTHONPATH (the wheels) after it.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# Each worker and learner thread on its own core; python output unbuffered into the logs.
export PYTHONUNBUFFERED=1

# Stage settings. The full check measures what the issue asks for; --quick shrinks every count
# so that the whole script runs in a few minutes on 2 CPU cores.
if [ "$QUICK" = 1 ]; then
    SECONDS_PER_RATE=0.5           # seconds of each micro-benchmark
    LEARNING_STARTS=200            # agent steps before learning, end to end
    E2E_STEPS=1000                 # agent steps measured after learning_starts
    E2E_RUNS_FIRST="auto:defaults 1:fp32 2:fp32" # num_envs:setting, run early
    E2E_RUNS_LATER="16:bf16_compiled"
    LEARNER_EAGER="fp32"
    LEARNER_COMPILED="fp32_compiled"
    REPLAY_GAMES=4
    EMULATOR_GAMES=2
    OPS_RUN="env=Pong num_envs=2 total_steps=600 learning_starts=200 buffer_size=4000 compile=false"
    OPS_WINDOW=100
    REPLAY_1M_CAPACITY=20000
else
    SECONDS_PER_RATE=2
    LEARNING_STARTS=1000
    E2E_STEPS=2500
    # auto:defaults is a bare dqn-train (num_envs, compile and cuda_graph on auto): what a user
    # gets without options.
    E2E_RUNS_FIRST="auto:defaults 1:fp32 16:bf16_compiled"
    E2E_RUNS_LATER="8:fp32 32:bf16_compiled 1:bf16_compiled"
    LEARNER_EAGER="fp32,bf16"
    LEARNER_COMPILED="fp32_compiled,bf16_compiled"
    REPLAY_GAMES=16
    EMULATOR_GAMES=16
    OPS_RUN="" # benchmark.py's default: issue #9's run (Pong, num_envs=16, 4,000 agent steps)
    OPS_WINDOW=250
    REPLAY_1M_CAPACITY=1000000
fi

# Time limit of each stage, seconds. A compiled setting waits for inductor (and CUDA graphs)
# before its first update; the 1M replay is filled one transition at a time.
declare -A STAGE_LIMIT_S=(
    [info]=60 [pytest]=180 [e2e]=45 [e2e_compiled]=75 [learner_eager]=35
    [learner_compiled]=100 [emulator]=50 [replay]=25 [sb3]=60 [ops]=75 [replay_1m]=100
    [variants]=120
)

if [ -z "$LIMIT_SCALE" ]; then
    case "$DEVICE" in cuda*) LIMIT_SCALE=1 ;; *) LIMIT_SCALE=6 ;; esac
fi
for stage in "${!STAGE_LIMIT_S[@]}"; do
    STAGE_LIMIT_S[$stage]=$((STAGE_LIMIT_S[$stage] * LIMIT_SCALE))
done
TOTAL_BUDGET_S=$((TOTAL_BUDGET_S * LIMIT_SCALE))

START_S=$(date +%s)
ABORT="" # set when the environment cannot run the rest
STAGE_GROUP="" # process group of the running stage
# A stage runs in a process group of its own, which Ctrl-C on this script would not reach.
trap '[ -n "$STAGE_GROUP" ] && kill -TERM -- "-$STAGE_GROUP" 2>/dev/null; echo; exit 130' INT TERM

elapsed() { echo $(($(date +%s) - START_S)); }

record() { # name status rc seconds limit reason
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$OUT/stages.tsv"
}

# run_stage NAME LIMIT_S COMMAND...: run under timeout, log to logs/NAME.log, record the status.
run_stage() {
    local name="$1" limit="$2"
    shift 2
    local left=$((TOTAL_BUDGET_S - $(elapsed)))
    if [ -n "$ABORT" ]; then
        record "$name" skipped "" 0 "$limit" "$ABORT"
        printf '%-26s skipped (%s)\n' "$name" "$ABORT"
        return
    fi
    if [ "$left" -lt 10 ]; then
        record "$name" skipped "" 0 "$limit" "total budget of ${TOTAL_BUDGET_S} s spent"
        printf '%-26s skipped (total budget spent)\n' "$name"
        return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    printf '%-26s running (limit %s s) ... ' "$name" "$limit"
    local t0 rc status reason=""
    t0=$(date +%s.%N)
    # timeout leads a process group of its own and signals all of it at the limit: dqn-train
    # subprocesses and their game workers too. What is left of the group once the stage is over
    # (a worker the stage leaked, a run still writing its checkpoint) is killed, so that the
    # next stage has the machine to itself.
    timeout --kill-after=5 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1 &
    STAGE_GROUP=$!
    wait "$STAGE_GROUP"
    rc=$?
    kill -KILL -- "-$STAGE_GROUP" 2>/dev/null
    STAGE_GROUP=""
    local seconds
    seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    case "$rc" in
    0) status=ok ;;
    124 | 137) status=timeout; reason="stopped at its limit of $limit s" ;;
    *) status=failed; reason="exit $rc: $(grep -v '^\s*$' "$OUT/logs/$name.log" | tail -n 1 | cut -c1-200 | tr '\t' ' ')" ;;
    esac
    record "$name" "$status" "$rc" "$seconds" "$limit" "$reason"
    echo "$status in $seconds s${reason:+ ($reason)}"
}

benchmark() { # stage-name limit benchmark.py arguments...
    local name="$1" limit="$2"
    shift 2
    run_stage "$name" "$limit" "$PY" "$REPO/scripts/benchmark.py" --device "$DEVICE" \
        --seconds "$SECONDS_PER_RATE" --learning-starts "$LEARNING_STARTS" \
        --e2e-steps "$E2E_STEPS" --work-dir "$WORK" --json-out "$OUT/stages/$name.json" "$@"
}

e2e_runs() { # "N:setting ..." -> one stage each
    local run n setting limit
    for run in $1; do
        n="${run%%:*}"
        setting="${run#*:}"
        limit="${STAGE_LIMIT_S[e2e]}"
        [[ "$setting" == *compiled* || "$setting" == defaults ]] && limit="${STAGE_LIMIT_S[e2e_compiled]}"
        if [ "$n" = auto ]; then
            benchmark "e2e_auto_${setting}" "$limit" --stages e2e --num-envs 1 --settings "$setting"
            continue
        fi
        if [ "$n" -gt "$(getconf _NPROCESSORS_ONLN)" ]; then
            # As benchmark.py's rule: N game workers need N cores.
            record "e2e_${n}_${setting}" skipped "" 0 "$limit" "num_envs=$n needs $n cores; this machine has $(getconf _NPROCESSORS_ONLN)"
            printf '%-26s skipped (%s cores)\n' "e2e_${n}_${setting}" "$(getconf _NPROCESSORS_ONLN)"
            continue
        fi
        benchmark "e2e_${n}_${setting}" "$limit" --stages e2e --num-envs "$n" --settings "$setting"
    done
}

echo "dqn-atari GPU check: device $DEVICE$([ "$QUICK" = 1 ] && echo ', --quick'), budget $TOTAL_BUDGET_S s, output $OUT"
echo "checkout $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
echo "PYTHONPATH=$PYTHONPATH"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
fi

run_stage info "${STAGE_LIMIT_S[info]}" "$PY" "$REPO/scripts/gpu_check.py" info \
    --device "$DEVICE" --out "$OUT/stages/info.json"
cat "$OUT/logs/info.log"
if [ "$(tail -n 1 "$OUT/stages.tsv" | cut -f2)" != ok ]; then
    ABORT="the environment check failed (logs/info.log)"
fi

# tests/test_cuda.py by name: collecting the whole suite would need the installed console
# scripts that tests/test_cli.py looks for.
run_stage pytest "${STAGE_LIMIT_S[pytest]}" "$PY" -m pytest -m cuda "$REPO/tests/test_cuda.py" \
    -q -rA -p no:cacheprovider --rootdir "$REPO" --junitxml "$OUT/stages/pytest.xml"
e2e_runs "$E2E_RUNS_FIRST"
benchmark emulator "${STAGE_LIMIT_S[emulator]}" --stages emulator --num-envs "$EMULATOR_GAMES"
benchmark learner_eager "${STAGE_LIMIT_S[learner_eager]}" --stages learner --settings "$LEARNER_EAGER"
benchmark learner_compiled "${STAGE_LIMIT_S[learner_compiled]}" --stages learner \
    --settings "$LEARNER_COMPILED"
benchmark replay "${STAGE_LIMIT_S[replay]}" --stages replay --replay-games "$REPLAY_GAMES"
benchmark sb3 "${STAGE_LIMIT_S[sb3]}" --stages sb3
if [ -n "$OPS_RUN" ]; then
    benchmark ops "${STAGE_LIMIT_S[ops]}" --stages ops --ops-window "$OPS_WINDOW" --ops-run "$OPS_RUN"
else
    benchmark ops "${STAGE_LIMIT_S[ops]}" --stages ops --ops-window "$OPS_WINDOW"
fi
# The script prints its JSON on stdout; the inner shell sends it to the stage's file.
# shellcheck disable=SC2016
run_stage replay_1m "${STAGE_LIMIT_S[replay_1m]}" bash -c \
    '"$0" "$1/scripts/replay_memory.py" --capacity "$2" --device "$3" >"$4"' \
    "$PY" "$REPO" "$REPLAY_1M_CAPACITY" "$DEVICE" "$OUT/stages/replay_1m.json"

e2e_runs "$E2E_RUNS_LATER"

# Eager (a compiled update per variant would spend the stage in inductor), 1 s a variant.
benchmark variants "${STAGE_LIMIT_S[variants]}" --stages variants --rounds 1 --no-variant-ops \
    --seconds 1

rm -rf "$WORK"
printf '{"device": "%s", "quick": %s, "budget_s": %s, "total_seconds": %s, "checkout": "%s", "finished_utc": "%s"}\n' \
    "$DEVICE" "$([ "$QUICK" = 1 ] && echo true || echo false)" "$TOTAL_BUDGET_S" "$(elapsed)" \
    "$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    >"$OUT/check.json"
"$PY" "$REPO/scripts/gpu_check.py" report "$OUT"
