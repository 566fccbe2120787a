"""Beyond one process: cluster jobs through submitit (SLURM, or local processes to try a
submission), all writing into one run directory.

`options` checks what a submission asks for before anything is submitted (`cli` turns
the shared click options into those checked values); `executor`
submits job arrays, waits for them and resubmits jobs that died without a result;
`records` keeps a JSON record of every submission in the run directory and reports job
states; `jobs` holds the job callables, which submitit requeues on preemption or timeout.
The run directory stays the only contract: jobs resume from its per-epoch checkpoints and
r_t chunks, so requeueing the same callable is all a preempted job needs.
"""
