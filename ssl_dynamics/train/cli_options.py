"""The `train` options that say how to train, never what: shared by run, submit and extend."""
from __future__ import annotations

import click


def how_options():
    """Decorator adding --precision ... --pack."""
    opts = [
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
                     show_default=True, help="auto: bf16 autocast on a GPU that computes bf16 natively (compute capability 8.0+), else fp32. fp32 on a GPU turns cuDNN's TF32 convolutions off."),
        click.option("--channels-last/--no-channels-last", default=None,
                     help="NHWC memory format (default: on for a GPU or a pack above 1)."),
        click.option("--deterministic", is_flag=True, help="Deterministic kernels (bit-reproducible resumes)."),
        click.option("--checkpoint-dtype", type=click.Choice(["fp32", "bf16"]), default=None,
                     help="Storage type of the saved weights: bf16 halves the archive (resume.pt keeps "
                          "fp32). Default: what each seed's checkpoints use so far; a new seed takes its "
                          "setup's seeds' dtype (fp32 for the first)."),
        click.option("--compile", "compile_", is_flag=True,
                     help="torch.compile the network (opt-in; pays compilation in the first epoch)."),
        click.option("--compile-mode", type=click.Choice(["default", "reduce-overhead", "max-autotune"]),
                     default="default", show_default=True,
                     help="torch.compile mode (implies --compile); reduce-overhead adds CUDA graphs."),
        click.option("--pack", default="auto", show_default=True,
                     help="Seeds of one setup trained together as one grouped network per device: "
                          "auto (1 on the CPU, 4 on a GPU) or a number; 1 = one seed at a time."),
    ]

    def decorate(f):
        for o in reversed(opts):
            f = o(f)
        return f
    return decorate
