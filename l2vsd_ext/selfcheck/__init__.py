"""python -m l2vsd_ext.selfcheck: one command that checks a machine.

On a GPU: every op's CUDA-vs-CPU parity (forward and backward, float32 and, where supported,
float16/bfloat16), a short run of every mode on the tiny random pipeline, the JVP engine on Stable
Diffusion 2.1-base's UNet architecture as a ratio to the plain forward, the seconds per iteration
of every mode at the paper's setting, and the hash grid / compositing against the references.
On a CPU-only machine: the CPU parts, at cheap sizes unless --full; the rest is listed as skipped.
Writes selfcheck.json and selfcheck.md; exits 1 when any parity check fails."""
