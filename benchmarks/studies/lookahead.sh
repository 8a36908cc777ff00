#!/bin/bash
# Issue 20's study: does the lookahead (L-VSD, L²-VSD) change what VSD distils, on the shapes
# prior, with threestudio's VSD settings? Three phases, most important first; each is one shapes
# bench folder, and rerunning this script resumes unfinished runs and skips scored ones, so it can
# be killed at any time. Usage:
#   OUT=study bash benchmarks/studies/lookahead.sh [A|B|C|D|E|F|V ...]
#   (two shells with different phases or OBJECTS run side by side on two cores)
# Phases A-F ran on version 2 of the shapes prior, so they default to PRIOR=shapes-v2; phase V
# reruns the core cases on the shipped version 3 (V_PRIOR, default shapes).
# A: the modes at LoRA lr 1e-4 (threestudio's), η at κ = 7.8e-3 (the paper's η ≈ 0.1).
# B: A's folder and cases plus κ = 7.8e-2 (the paper's η ≈ 1), last-layer and HL-VSD, so that one
#    table pairs them all with the same VSD runs. The paper's η 1e-3 and 1e-2 (κ 7.8e-5, 7.8e-4)
#    are left out for time: by linearity they are 10 and 100 times smaller corrections than A's.
# C: LoRA lr 1e-2, the regime where one LoRA step moves ε_φ by ~10 % of the VSD signal.
# D: guidance 7.5 (threestudio's for VSD), where the shipped prior draws the front in 88 % of its
#    front-view samples against 66 % at the shapes default of 3 (docs/shapes.md): can a mode
#    distil a front when the prior draws one? Pumpkin only by default (its face is the clearest).
# E: the control for B's κ = 7.8e-2 gain: the same correction size (κ, and per tensor the norm of
#    the optimiser's update) along a random direction instead of the lookahead's. In A's folder,
#    paired with the same VSD runs.
# F: run length: VSD and L²-VSD at κ = 7.8e-2 for twice the runs' 600 steps (F_STEPS), pumpkin and
#    robot (F_OBJECTS): do the curves settle, and does the gap hold, grow or close?
# V: phases A/B's modes on version 3, the prior that draws the fronts: SDS, VSD, L-VSD and L²-VSD
#    at the paper's η 1e-3, 1e-2, 1e-1 and 1 equivalents (κ 7.8e-5 ... 7.8e-2); pumpkin also with
#    seeds 3-5 (V_PUMPKIN_SEEDS) for SDS, VSD and κ 7.8e-2.
# W: the last-layer approximation and HL-VSD on version 3, at κ = 7.8e-2 (the only size that moved
#    V's scores), paired with their own VSD runs (V's run folders were not kept, and VSD is
#    deterministic, so W's VSD rows reproduce V's).
# S: VSD and L²-VSD at κ = 7.8e-2 with HiFA's sqrt timestep schedule (S_STEPS, default 1200), the
#    regime where VSD draws the pumpkin's front: does the lookahead change anything there?
set -u
PRIOR=${PRIOR:-shapes-v2}; OUT=${OUT:-study}; THREADS=${THREADS:-1}; STEPS=${STEPS:-}
OBJECTS=${OBJECTS:-"pumpkin robot house duck"}; SEEDS=${SEEDS:-"0 1 2"}
L2="lookahead_direction=optimizer"
bench() {  # folder, baseline case, cases...
  local folder=$1 baseline=$2; shift 2
  python -m l2vsd_ext.shapes.bench --pretrained "$PRIOR" --out "$OUT/$folder" --objects $OBJECTS \
    --seeds $SEEDS --threads "$THREADS" --val-every 50 --baseline "$baseline" ${STEPS:+--steps $STEPS} \
    --modes "$@"
}
for phase in "${@:-A B C D E F V W S}"; do
  case $phase in
    A) bench A_lr1e-4 vsd sds vsd lvsd "l2vsd:eta_relative=7.8e-3,$L2" ;;
    B) bench A_lr1e-4 vsd sds vsd lvsd "l2vsd:eta_relative=7.8e-3,$L2" "l2vsd:eta_relative=7.8e-2,$L2" \
         "l2vsd:eta_relative=7.8e-3,$L2,last_layer=1" "hlvsd:eta_relative=7.8e-3,$L2" ;;
    C) bench C_lr1e-2 vsd:lora_lr=1e-2 vsd:lora_lr=1e-2 lvsd:lora_lr=1e-2 "l2vsd:lora_lr=1e-2,eta_relative=7.8e-3,$L2" ;;
    D) OBJECTS=${D_OBJECTS:-pumpkin} bench D_cfg7.5 vsd:guidance_scale=7.5 sds:guidance_scale=7.5 \
         vsd:guidance_scale=7.5 "l2vsd:guidance_scale=7.5,eta_relative=7.8e-3,$L2" ;;
    E) bench A_lr1e-4 vsd vsd "l2vsd:eta_relative=7.8e-2,$L2" \
         "l2vsd:eta_relative=7.8e-2,lookahead_direction=random" ;;
    F) OBJECTS=${F_OBJECTS:-"pumpkin robot"} STEPS=${F_STEPS:-1200} bench F_long vsd vsd \
         "l2vsd:eta_relative=7.8e-2,$L2" ;;
    V) PRIOR=${V_PRIOR:-shapes} bench V_v3 vsd sds vsd "l2vsd:eta_relative=7.8e-2,$L2" \
         "l2vsd:eta_relative=7.8e-4,$L2" "l2vsd:eta_relative=7.8e-3,$L2" lvsd "l2vsd:eta_relative=7.8e-5,$L2"
       PRIOR=${V_PRIOR:-shapes} OBJECTS=pumpkin SEEDS=${V_PUMPKIN_SEEDS:-"3 4 5"} bench V_v3 vsd sds vsd \
         "l2vsd:eta_relative=7.8e-2,$L2" ;;
    W) PRIOR=${V_PRIOR:-shapes} bench W_v3 vsd vsd "l2vsd:eta_relative=7.8e-2,$L2,last_layer=1" \
         "hlvsd:eta_relative=7.8e-2,$L2" ;;
    S) PRIOR=${V_PRIOR:-shapes} STEPS=${S_STEPS:-1200} bench S_sqrt vsd:timestep_schedule=sqrt \
         vsd:timestep_schedule=sqrt "l2vsd:timestep_schedule=sqrt,eta_relative=7.8e-2,$L2" ;;
    *) echo "unknown phase $phase (A, B, C, D, E, F, V, W or S)" >&2; exit 2 ;;
  esac
done
